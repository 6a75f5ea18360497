"""Training a model: its config and command line, the recipes, the loop, losses and pretrained weights."""
