"""Curation parts: the source (`source`), filters (`quality`, `decontamination`, `difficulty`, which rows
a pool draws from: `pool`), specialty labels (`specialty`, `embedding`), the annotators a curation asks and
their pre-flights, replies and cache (`annotators`, `preflight`, `llm`, `cache`, `unusable`), selection
(`sampling`), reasoning traces (`traces/`), chat formatting (`formatting`), statistics (`stats`) and the
curate job's resources (`resources`)."""

# Canonical columns of a curation row.
QUESTION, COT, RESPONSE = "Question", "Complex_CoT", "Response"
REQUIRED_COLUMNS = (QUESTION, COT, RESPONSE)
