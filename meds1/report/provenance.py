"""What produced each stage's numbers, as the stages record it (meds1.store.provenance), and where compared
experiments differ.

Every stage record carries `provenance`: {"meds1": {version, commit, dirty}, "python",
"packages": {torch, transformers, trl, datasets, vllm, hydra-core}, "device": {kind, name, count,
cuda}, "slurm": {job_id, nodes} | None, "source": {revision, fingerprint} | None}. Records written
before it existed have none and show "-". Two experiments are flagged when, for the same stage,
they differ in the meds1 version/commit/dirty state, Python, a package version, the device kind,
model or CUDA version, or the source revision/fingerprint; and when an eval source's questions differ
(the eval's `metrics.suite` fingerprints: e.g. a hub benchmark changed under its branch). SLURM job
ids and nodes differ by nature and the GPU count is part of an experiment's recipe (its global batch is
fixed), so neither is compared.
"""

from __future__ import annotations

from meds1.pipeline import STAGES
from meds1.report.experiments import Experiment
from meds1.store.provenance import PACKAGES

HEADER = ["experiment", "stage", "meds1", "python", *PACKAGES, "device", "slurm", "source"]
COMPARED = [
    ("meds1 version", ("meds1", "version")),
    ("meds1 commit", ("meds1", "commit")),
    ("meds1 dirty", ("meds1", "dirty")),
    ("python", ("python",)),
    *((package, ("packages", package)) for package in PACKAGES),
    ("device", ("device", "kind")),
    ("device model", ("device", "name")),
    ("CUDA", ("device", "cuda")),
    ("source revision", ("source", "revision")),
    ("source fingerprint", ("source", "fingerprint")),
]


def _get(record: dict | None, path: tuple[str, ...]):
    for part in path:
        if not isinstance(record, dict):
            return None
        record = record.get(part)
    return record


def _text(value) -> str:
    return "-" if value in (None, "") else str(value)


def meds1_cell(record: dict) -> str:
    meds1 = record.get("meds1") or {}
    commit = meds1.get("commit")
    text = " ".join(_text(v) for v in (meds1.get("version"), commit[:10] if commit else None))
    return text + ("+dirty" if meds1.get("dirty") else "")


def device_cell(record: dict) -> str:
    device = record.get("device") or {}
    if device.get("kind") == "cuda":
        return f"{_text(device.get('count'))}x {_text(device.get('name'))} (CUDA {_text(device.get('cuda'))})"
    return " ".join(_text(v) for v in (device.get("kind"), device.get("name")))


def slurm_cell(record: dict) -> str:
    slurm = record.get("slurm")
    return f"{_text(slurm.get('job_id'))} on {_text(slurm.get('nodes'))}" if slurm else "-"


def source_cell(record: dict) -> str:
    source = record.get("source")
    if not source:
        return "-"
    fingerprint = source.get("fingerprint")
    return f"{_text(source.get('revision'))} {fingerprint[:12] if fingerprint else '-'}"


def cells(record: dict | None) -> list[str]:
    """The HEADER cells after experiment and stage ("-" throughout for a record without provenance)."""
    if not record:
        return ["-"] * (len(HEADER) - 2)
    packages = record.get("packages") or {}
    return [
        meds1_cell(record),
        _text(record.get("python")),
        *(_text(packages.get(p)) for p in PACKAGES),
        device_cell(record),
        slurm_cell(record),
        source_cell(record),
    ]


def rows(experiments: list[Experiment]) -> list[list[str]]:
    """One row per experiment and stage with provenance; one row of "-" for an experiment with none."""
    table = []
    for exp in experiments:
        stages = [stage for stage in STAGES if exp.provenance.get(stage)]
        table += [[exp.slug, stage, *cells(exp.provenance[stage])] for stage in stages] or [
            [exp.slug, "-", *cells(None)]
        ]
    return table


def compact(exp: Experiment) -> str:
    """One terminal line: the eval stage's software and source, and every stage's device."""
    records = {stage: exp.provenance.get(stage) for stage in STAGES if exp.provenance.get(stage)}
    if not records:
        return f"{exp.slug}: -"
    main = records.get("eval") or next(iter(reversed(records.values())))
    packages = main.get("packages") or {}
    software = " ".join(f"{p} {_text(packages.get(p))}" for p in PACKAGES)
    devices = ", ".join(f"{stage} {device_cell(record)}" for stage, record in records.items())
    return (
        f"{exp.slug}: meds1 {meds1_cell(main)} | python {_text(main.get('python'))} | {software} | "
        f"{devices} | source {source_cell(main)}"
    )


def differences(experiments: list[Experiment]) -> list[str]:
    """One line per stage and field in which the experiments' recorded provenance differs."""
    lines = []
    for stage in STAGES:
        recorded = [(exp.slug, exp.provenance.get(stage)) for exp in experiments if exp.provenance.get(stage)]
        for label, path in COMPARED:
            by_value: dict[str, list[str]] = {}
            for slug, record in recorded:
                by_value.setdefault(_text(_get(record, path)), []).append(slug)
            if len(by_value) > 1:
                lines.append(f"{stage} {label} differs: {_who_has_what(by_value)}")
    return lines


def _who_has_what(by_value: dict[str, list[str]]) -> str:
    """ "a (exp1, exp2); b (exp3)": each value with the experiments that recorded it."""
    return "; ".join(f"{value} ({', '.join(by_value[value])})" for value in sorted(by_value))


def suite_differences(experiments: list[Experiment]) -> list[str]:
    """One line per eval source whose questions differ between experiments (`metrics.suite`)."""
    by_source: dict[str, dict[str, list[str]]] = {}
    for exp in experiments:
        for source, entry in ((exp.metrics or {}).get("suite") or {}).items():
            label = f"{entry['fingerprint']} ({entry['questions']} questions)"
            by_source.setdefault(source, {}).setdefault(label, []).append(exp.slug)
    return [
        f"eval questions of {source} differ: {_who_has_what(labels)}"
        for source, labels in sorted(by_source.items())
        if len(labels) > 1
    ]
