"""Evaluation: the metrics, their intervals, the evaluator, the user-agnostic floors and the report."""
