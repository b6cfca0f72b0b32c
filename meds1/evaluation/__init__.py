"""Eval parts: suites (suite_spec: an entry; data: loading), prompts, answering them (generation, budget
forcing, predictions), answer extraction, scoring, metrics, and re-scoring a predictions file (score)."""
