"""Experiments and one-off tools on top of demo/ and training/ (python -m tools.NAME); no library imports them."""
