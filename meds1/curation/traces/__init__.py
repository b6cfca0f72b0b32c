"""Reasoning-trace research on the selected rows (med-s1's trace study): transforms as data (`spec`, the
YAML files here and in `perturbation/`), the chain that applies them (`chain`), their LLM calls
(`calls`, `requests`) and perturbations (`perturb`). `spec` imports nothing heavy: the config rules
check a chain at compose with it."""
