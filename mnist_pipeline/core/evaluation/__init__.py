"""Scoring a model on the test split, its plots, and the promotion gate."""
