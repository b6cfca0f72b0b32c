"""Trace transforms as data: the YAML schema, its loader, and the post-processing and check vocabulary.

A transform (`meds1/curation/traces/<name>.yaml`, or any YAML file path given in
`curation.trace.transforms`) is a list of LLM `calls` and the row fields it `writes`:

    name: step
    produces_steps: true            # its output is "## Step N:" steps (what perturbations need)
    calls:
      - name: trace                 # later calls and `writes` refer to the reply by this name
        inputs: {cot: Complex_CoT}  # placeholder -> a row column, `$call` (an earlier reply),
                                    # {from: column, post: [...]} or {table: name, key: $call}
        max_new_tokens: 4096        # default: curation.trace.llm.max_new_tokens
        prompt: "...{cot}..."       # one user turn; its placeholders must all be inputs
        post: [{clip_to: "## Step 1:"}]   # applied to the reply, in order
        checks: [nonempty, {min_steps: 1}]  # the first that fails rejects the row
    writes: {Complex_CoT: trace}    # column -> call | {from: call, post, checks} | {value: text}

`chain: [cot, step]` instead of calls makes a transform that runs others in order. POST and CHECKS below
are the whole vocabulary; the curate stage (meds1/curation/traces) runs the calls. This module is only
text and YAML, so `meds1/config/rules.py` checks a config's transforms at compose, before any request.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from meds1.errors import UserError

if TYPE_CHECKING:
    from meds1.config.schema import TraceConfig

TRACES_DIR = Path(__file__).parent
PERTURBATION_DIR = TRACES_DIR / "perturbation"
STEP_HEADER = re.compile(r"##\s*Step\s*\d+:")  # med-s1 perturbation.py:parse_steps


def _clip_to(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    return text[match.start() :] if match else text


def _clip_to_line(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    return text[text.rfind("\n", 0, match.start()) + 1 :] if match else text


def _max_chars(text: str, arg: dict) -> str:
    chars, ellipsis = arg["chars"], arg.get("ellipsis", "")
    return text if len(text) <= chars else text[: chars - len(ellipsis)] + ellipsis


def _bullet_lines(text: str, marker: str) -> str:
    lines = [line.strip() for line in text.split("\n")]
    return "\n".join(line if line.startswith(marker) else f"{marker} {line}" for line in lines if line)


def _drop_leading_lines(text: str, arg: dict) -> str:
    """Drop blank lines and lines that look like preamble (case-insensitive) until the first other line."""
    starts = tuple(s.lower() for s in arg.get("startswith", []))
    contains = [s.lower() for s in arg.get("contains", [])]
    lines = text.split("\n")
    for i, line in enumerate(lines):
        low = line.lower()
        if line.strip() and not (low.startswith(starts) or any(c in low for c in contains)):
            return "\n".join(lines[i:])
    return ""


def _one_of(text: str, arg: dict) -> str:
    return text if text in arg["values"] else arg["default"]


def _capture(text: str, arg) -> str:
    """Group 1 of the first (or, with last: true, the last) match, stripped; "" when nothing matches."""
    pattern, last = (arg, False) if isinstance(arg, str) else (arg["pattern"], arg.get("last", False))
    matches = list(re.finditer(pattern, text)) if last else [m for m in [re.search(pattern, text)] if m]
    return matches[-1].group(1).strip() if matches else ""


POST = {  # name -> (function(text, arg), what the argument is; None: no argument)
    "strip": (lambda text, _: text.strip(), None),
    "upper": (lambda text, _: text.upper(), None),
    "lower": (lambda text, _: text.lower(), None),
    "clip_to": (_clip_to, "a regex: drop the text before its first match (no match: keep all)"),
    "clip_to_line": (_clip_to_line, "a regex: drop the lines before the one holding its first match"),
    "replace": (lambda text, arg: re.sub(arg[0], arg[1], text), "[regex, replacement]"),
    "max_chars": (_max_chars, "{chars: N, ellipsis: '...'}: cut longer text, ending with the ellipsis"),
    "ensure_suffix": (lambda text, arg: text if text.endswith(arg) else text + arg, "a string"),
    "bullet_lines": (_bullet_lines, "a marker: lines stripped, blank ones dropped, the rest start with it"),
    "drop_leading_lines": (_drop_leading_lines, "{startswith: [...], contains: [...]}"),
    "one_of": (_one_of, "{values: [...], default: value}"),
    "capture": (_capture, "a regex with one group, or {pattern: regex, last: true}"),
}


def count_steps(text: str) -> int:
    return len(STEP_HEADER.findall(text))


CHECKS = {  # name -> (passes(output, arg, inputs), what the argument is)
    "nonempty": (lambda out, _, __: bool(out.strip()), None),
    "min_chars": (lambda out, n, _: len(out.strip()) >= n, "a number of characters (stripped)"),
    "min_steps": (lambda out, n, _: count_steps(out) >= n, "a number of '## Step N:' headers"),
    "matches": (lambda out, pattern, _: re.search(pattern, out) is not None, "a regex"),
    "longer_than": (lambda out, name, inputs: len(out) > len(inputs[name]), "an input of the call"),
}


Rule = tuple[str, Any]


def apply_post(rules: list[Rule], text: str) -> str:
    for name, arg in rules:
        text = POST[name][0](text, arg)
    return text


def failed_check(checks: list[Rule], output: str, inputs: dict[str, str]) -> str | None:
    """The first check the output fails, as `name` or `name=arg`; None when all pass."""
    for name, arg in checks:
        if not CHECKS[name][0](output, arg, inputs):
            return name if arg is None else f"{name}={arg}"
    return None


@dataclass
class Input:
    source: str | None = None  # a row column, or $call
    post: list[Rule] = field(default_factory=list)
    table: str | None = None  # {table: name, key: $call}: the table's entry for that value
    key: str | None = None


@dataclass
class Call:
    name: str
    prompt: str
    inputs: dict[str, Input]
    max_new_tokens: int | None = None
    post: list[Rule] = field(default_factory=list)
    checks: list[Rule] = field(default_factory=list)


@dataclass
class Write:
    source: str | None = None  # a call's name
    value: str | None = None  # a literal (no call)
    post: list[Rule] = field(default_factory=list)
    checks: list[Rule] = field(default_factory=list)


@dataclass
class Transform:
    name: str
    path: str
    description: str = ""
    calls: list[Call] = field(default_factory=list)
    writes: dict[str, Write] = field(default_factory=dict)
    tables: dict[str, dict[str, str]] = field(default_factory=dict)
    chain: list[str] = field(default_factory=list)  # other transforms, run in order (then no calls)
    produces_steps: bool = False

    def columns(self) -> set[str]:
        """The row columns the calls read."""
        return {
            i.source
            for c in self.calls
            for i in c.inputs.values()
            if i.source and not i.source.startswith("$")
        }


def shipped_transforms() -> list[str]:
    return sorted(p.stem for p in TRACES_DIR.glob("*.yaml"))


def is_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or "/" in name


def transform_path(name: str) -> Path:
    return Path(name).expanduser() if is_path(name) else TRACES_DIR / f"{name}.yaml"


def load_transform(name: str) -> Transform:
    """A shipped transform by name, or the transform in a YAML file (a path ending in .yaml)."""
    path = transform_path(name)
    if is_path(name):
        if not path.is_file():
            raise UserError(f"curation.trace.transforms: transform file {name} does not exist")
    elif not path.is_file():
        raise UserError(
            f"curation.trace.transforms: unknown transform {name!r}; valid: "
            f"{', '.join(shipped_transforms())} (or the path of a transform YAML file)"
        )
    return parse_transform(path)


def trace_files(trace: TraceConfig) -> dict[str, Path]:
    """Every transform and perturbation YAML file a trace chain reads (shipped or the user's, chained ones
    too), by name; {} without a chain. Their content is part of the stages' identity
    (meds1/store/identity.py), so an edited file makes a new output instead of reusing one made with the
    old text."""
    paths: dict[str, Path] = {}
    pending = list(trace.transforms)
    while pending:
        name = pending.pop(0)
        if name not in paths:
            paths[name] = transform_path(name)
            pending += load_transform(name).chain
    for spec in prompted_perturbations(trace):
        paths[f"perturbation/{spec}"] = PERTURBATION_DIR / f"{spec}.yaml"
    return paths


def prompted_perturbations(trace: TraceConfig) -> list[str]:
    """The perturbation and `restore` steps of `trace` that ask the LLM (those with a prompt file:
    collapse_consecutive, answer, restore; skip, shuffle and add_irrelevant have none)."""
    perturbation = trace.perturbation.type
    steps = [str(perturbation)] * (perturbation is not None) + ["restore"] * trace.restore
    return [step for step in steps if (PERTURBATION_DIR / f"{step}.yaml").is_file()]


def calls_llm(trace: TraceConfig) -> bool:
    """Whether `trace` asks the trace LLM anything: a transform with calls, or a prompted perturbation."""
    return any(t.calls for t in expand(trace.transforms)) or bool(prompted_perturbations(trace))


def load_perturbation_spec(name: str) -> Transform:
    """The LLM prompts behind a perturbation (collapse_consecutive, answer) and `restore`."""
    return parse_transform(PERTURBATION_DIR / f"{name}.yaml")


def expand(names: list[str], seen: tuple[str, ...] = ()) -> list[Transform]:
    """The transforms a chain runs, with `chain:` transforms replaced by theirs, in order."""
    out = []
    for name in names:
        if name in seen:
            raise UserError(
                f"curation.trace.transforms: transform {name!r} chains itself ({' -> '.join(seen)})"
            )
        transform = load_transform(name)
        out += expand(transform.chain, (*seen, name)) if transform.chain else [transform]
    return out


def produces_steps(names: list[str]) -> bool:
    """Whether the chain ends in a transform whose output is "## Step N:" steps."""
    transforms = [load_transform(n) for n in names]
    return bool(transforms) and transforms[-1].produces_steps


def parse_transform(path: Path) -> Transform:
    where = f"transform {path}"
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{where} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data.get("name"):
        raise UserError(f"{where} needs a mapping with a `name`")
    known = {"name", "description", "calls", "writes", "tables", "chain", "produces_steps"}
    if unknown := set(data) - known:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}"
        )
    tables = data.get("tables") or {}
    calls = [_call(c, f"{where} call {i + 1}", tables) for i, c in enumerate(data.get("calls") or [])]
    names = [c.name for c in calls]
    for i, call in enumerate(calls):
        for placeholder, spec in call.inputs.items():
            for ref in (spec.source, spec.key):
                if ref and ref.startswith("$") and ref[1:] not in names[:i]:
                    raise UserError(
                        f"{where} call {call.name!r}: input {placeholder} reads {ref}, which is not an "
                        f"earlier call (earlier: {', '.join(names[:i]) or 'none'})"
                    )
    writes = {col: _write(w, f"{where} writes.{col}", names) for col, w in (data.get("writes") or {}).items()}
    chain = list(data.get("chain") or [])
    if chain and (calls or writes):
        raise UserError(f"{where}: a `chain` transform has no calls or writes of its own")
    return Transform(
        name=str(data["name"]),
        path=str(path),
        description=str(data.get("description", "")),
        calls=calls,
        writes=writes,
        tables=tables,
        chain=chain,
        produces_steps=bool(data.get("produces_steps", False)),
    )


def _rules(raw, vocabulary: dict, where: str) -> list[Rule]:
    rules = []
    for item in raw or []:
        name, arg = None, None
        if isinstance(item, str):
            name = item
        elif isinstance(item, dict) and len(item) == 1:
            ((name, arg),) = item.items()
        if name not in vocabulary:
            raise UserError(f"{where}: unknown rule {item!r}; valid: {', '.join(vocabulary)}")
        if (vocabulary[name][1] is None) != (arg is None):
            wanted = vocabulary[name][1] or "no argument"
            raise UserError(f"{where}: {name} takes {wanted}")
        for pattern in _patterns(name, arg):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise UserError(f"{where}: {name} {pattern!r} is not a regular expression ({exc})") from None
        if name != "longer_than":  # a dry run on a sample text catches an argument of the wrong shape
            try:
                vocabulary[name][0]("sample", arg, {}) if vocabulary is CHECKS else POST[name][0](
                    "sample", arg
                )
            except (TypeError, KeyError, IndexError, ValueError, AttributeError):
                raise UserError(f"{where}: {name} takes {vocabulary[name][1]}, not {arg!r}") from None
        rules.append((name, arg))
    return rules


def _patterns(name: str, arg) -> list[str]:
    if name in ("clip_to", "clip_to_line", "matches"):
        return [arg]
    if name == "replace":
        return [arg[0]]
    if name == "capture":
        return [arg if isinstance(arg, str) else arg["pattern"]]
    return []


def _input(raw, where: str) -> Input:
    if isinstance(raw, str):
        return Input(source=raw)
    if isinstance(raw, dict) and "table" in raw:
        return Input(table=raw["table"], key=raw.get("key"))
    if isinstance(raw, dict) and "from" in raw:
        return Input(source=raw["from"], post=_rules(raw.get("post"), POST, where))
    raise UserError(f"{where}: an input is a column, $call, {{from: column, post: [...]}} or {{table, key}}")


def _call(raw: dict, where: str, tables: dict) -> Call:
    if not isinstance(raw, dict) or not raw.get("name") or not isinstance(raw.get("prompt"), str):
        raise UserError(f"{where} needs a `name` and a `prompt`")
    where = f"{where} ({raw['name']})"
    inputs = {k: _input(v, f"{where} input {k}") for k, v in (raw.get("inputs") or {}).items()}
    for placeholder, spec in inputs.items():
        if spec.table is not None and spec.table not in tables:
            raise UserError(
                f"{where} input {placeholder}: no table {spec.table!r} (tables: {', '.join(tables)})"
            )
    try:
        fields = {
            f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(raw["prompt"]) if f
        }
    except ValueError as exc:
        raise UserError(f"{where}: the prompt is not a valid template ({exc})") from None
    if missing := sorted(fields - set(inputs)):
        raise UserError(
            f"{where}: the prompt names {', '.join('{' + f + '}' for f in missing)}, which is not an input; "
            f"inputs: {', '.join(inputs) or 'none'}"
        )
    checks = _rules(raw.get("checks"), CHECKS, where)
    for name, arg in checks:
        if name == "longer_than" and arg not in inputs:
            raise UserError(f"{where}: longer_than {arg!r} is not an input ({', '.join(inputs)})")
    return Call(
        name=str(raw["name"]),
        prompt=raw["prompt"],
        inputs=inputs,
        max_new_tokens=raw.get("max_new_tokens"),
        post=_rules(raw.get("post"), POST, where),
        checks=checks,
    )


def _write(raw, where: str, calls: list[str]) -> Write:
    if isinstance(raw, str):
        raw = {"from": raw}
    if not isinstance(raw, dict) or ("from" in raw) == ("value" in raw):
        raise UserError(f"{where}: a write is a call's name, {{from: call, post, checks}} or {{value: text}}")
    if "value" in raw:
        return Write(value=str(raw["value"]))
    if raw["from"] not in calls:
        raise UserError(f"{where}: {raw['from']!r} is not a call; calls: {', '.join(calls) or 'none'}")
    checks = _rules(raw.get("checks"), CHECKS, where)
    if any(name == "longer_than" for name, _ in checks):
        raise UserError(f"{where}: longer_than belongs to a call's checks")
    return Write(source=raw["from"], post=_rules(raw.get("post"), POST, where), checks=checks)
