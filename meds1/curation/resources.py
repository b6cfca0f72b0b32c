"""What `stage=curate` asks a scheduler for: its own resources plus those of any model it runs locally.

Of the models a curation asks (meds1/curation/annotators.py), one served by an endpoint (`openai`
backend) costs the job nothing; a local one (`hf`, `vllm`) needs its backend's GPUs, CPUs and memory
inside the curate job. Cheap to call (no heavy imports), so the SLURM launcher and dry runs can use it.
"""

from __future__ import annotations

from meds1.config.schema import Config, Resources
from meds1.curation.annotators import annotators


def local_model_resources(cfg: Config) -> list[Resources]:
    """Resources of the models curate would load into its own process, in the order it runs them."""
    return [a.inference.resources for a in annotators(cfg).values() if a.asked and not a.endpoint]


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
