"""Predicting training time before running: per-block timings and the runtime models."""
