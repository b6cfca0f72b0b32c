"""Eval parts: suite loading, prompts, answer extraction, scoring."""
