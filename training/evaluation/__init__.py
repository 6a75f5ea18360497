"""Metrics, the evaluation report with its figures, and the model card."""
