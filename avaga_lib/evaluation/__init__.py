"""Evaluating a trained run: maps, metrics, floors and priors, thresholds, prediction on new images."""
