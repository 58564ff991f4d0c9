"""Evaluation: metrics and checks of renderers against ground truth."""
