"""Experiments and one-off tools on top of demo/ and training/ (python -m tools.NAME); nothing imports them."""
