"""Spatial benchmarks: VSI-Bench and All-Angles Bench scoring, generation, lmms-eval plugin."""
