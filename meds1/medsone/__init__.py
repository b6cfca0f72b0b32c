"""med-s1 interop: its results.json imported into the registry and exported back (`results`), and its
experiments written as meds1 experiment files (`experiments`). `python -m meds1.medsone ...`."""
