"""What `stage=curate` asks a scheduler for: its own resources plus those of any model it runs locally.

The difficulty filter runs the base model through `inference` (vLLM/hf on GPUs, or an endpoint),
and the judge, the specialty labeler and the trace LLM each run through their own `llm.inference`.
A model served by an endpoint (`openai` backend) costs the job nothing; a local one (`hf`, `vllm`)
needs its backend's GPUs, CPUs and memory inside the curate job. Cheap to call (no heavy imports), so the
SLURM launcher and dry runs can use it.
"""

from __future__ import annotations

from meds1.config.schema import Config, Resources
from meds1.curation.pool import pool_filters
from meds1.curation.traces.spec import expand

REMOTE_BACKENDS = ("openai",)


def local_model_resources(cfg: Config) -> list[Resources]:
    """Resources of the models curate would load into its own process, in the order it runs them."""
    curation = cfg.curation
    needs = []
    if "difficulty" in pool_filters(curation):
        if cfg.inference.backend not in REMOTE_BACKENDS:
            needs.append(cfg.inference.resources)
        judge = curation.difficulty.judge
        if judge.method == "llm" and judge.llm.inference.backend not in REMOTE_BACKENDS:
            needs.append(judge.llm.inference.resources)
    labeler = curation.specialty
    if labeler.method == "llm" and labeler.llm.inference.backend not in REMOTE_BACKENDS:
        needs.append(labeler.llm.inference.resources)
    trace = curation.trace
    uses_trace_llm = any(t.calls for t in expand(trace.transforms)) or trace.perturbation.type in (
        "collapse_consecutive",
        "answer",
    )
    if (uses_trace_llm or trace.restore) and trace.llm.inference.backend not in REMOTE_BACKENDS:
        needs.append(trace.llm.inference.resources)
    return needs


def curate_resources(cfg: Config) -> Resources:
    """The curate job's request: the largest of each need; time adds up (the models run in turn)."""
    parts = [cfg.curation.resources, *local_model_resources(cfg)]
    return Resources(
        gpus=max(r.gpus for r in parts),
        nodes=1,
        cpus=max(r.cpus for r in parts),
        mem_gb=max(r.mem_gb for r in parts),
        time_min=sum(r.time_min for r in parts),
    )
