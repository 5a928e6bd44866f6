"""Evaluating a trained workdir (and train_and_evaluate: the loop, then that), the report
files, folds and cross-validation, fold records and comparisons, cross-corpus evaluation, run
reports."""
