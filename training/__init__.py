"""Builds the models that demo/ serves: data/ (specs, prepare, pack), fit/ (config, recipes, loop), evaluation/.

The four commands are this package's modules prepare, train, evaluate and push (python -m training.NAME).
"""
