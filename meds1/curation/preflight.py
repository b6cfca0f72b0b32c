"""Before any annotation, each annotator the curation asks (meds1/curation/annotators.py) sends its first
request alone when a pre-flight is owed (meds1.curation.llm: an endpoint that has not answered under the
annotator's cache key), so a dead endpoint, a wrong key or model name, or a reply that cannot be used
stops curate in seconds rather than after hours of annotation. The trace LLM's goes too, though its
chain runs after selection, hours later.
"""

from __future__ import annotations

import pandas as pd

from meds1.config.schema import Config
from meds1.curation.annotators import BASE_MODEL, JUDGE, LABELER, TRACE_LLM, annotators
from meds1.curation.difficulty import preflight_base_model, preflight_judge
from meds1.curation.specialty import preflight_labeler
from meds1.curation.traces.chain import preflight_traces
from meds1.curation.traces.requests import TraceLLM


def preflight_annotators(pool: pd.DataFrame, cfg: Config, source_fingerprint: str, trace: TraceLLM) -> dict:
    """{annotator: requests its pre-flight sent} for those that sent one, in the order they went; `pool`
    holds the rows about to be annotated, `trace` is the stage's trace LLM (its counts record its own)."""
    send = {
        BASE_MODEL: lambda a: preflight_base_model(a, pool, cfg, source_fingerprint),
        JUDGE: lambda a: preflight_judge(a, pool, cfg, source_fingerprint),
        LABELER: lambda a: preflight_labeler(a, pool, cfg, source_fingerprint),
        TRACE_LLM: lambda a: preflight_traces(pool, cfg, trace),
    }
    sent = {}
    for name, annotator in annotators(cfg).items():
        if annotator.asked and (requests := send[name](annotator)):
            sent[name] = requests
    return sent
