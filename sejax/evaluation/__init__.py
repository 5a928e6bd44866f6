"""Metrics, evaluating a trained workdir, cross-validation, cross-corpus, run reports."""
