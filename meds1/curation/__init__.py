"""Curation parts: source loading, quality filter, selection, chat formatting."""

# Canonical columns of a curation row.
QUESTION, COT, RESPONSE = "Question", "Complex_CoT", "Response"
REQUIRED_COLUMNS = (QUESTION, COT, RESPONSE)
