"""Evaluation: per-AU F1 (Table II) and per-class emotion accuracy (Table III)."""
