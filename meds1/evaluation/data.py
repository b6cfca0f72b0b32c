"""Load multiple-choice eval suites, in HuatuoGPT-o1's eval_data.json shape or any shape a mapping names.

A suite is a list of entries (`eval.suite`), each a string or a mapping
(`meds1.evaluation.suite_spec.SuiteSpec`):

- a file: one object `{source: [rows]}`, a flat list of rows (each with `source`, else the file's
  stem is the source), jsonl of such rows, or a .csv / .parquet table; `pkg://meds1/...` names a file
  shipped in the package;
- a directory: every such file in it, in name order (or only its `data_files`);
- a hub dataset: `hf://OWNER/NAME?split=test&config=...&revision=...&source=...` (`source`, like a
  mapping's `name`, names every row; default: the rows' `source` column, else NAME_SPLIT). Loaded with
  `datasets`.

By default a row needs `question`, `options` (letter -> text, or a list of texts for A, B, ...; options
may run A..J) and `answer_idx` (a letter, or a 0-based index). A mapping says where a benchmark keeps
them instead: `{path: ..., name: SOURCE, question: COL, options: COL or [COL, ...], answer: COL,
answer_format: letter|index0|index1|text}`. When `answer` is one of the option columns (GPQA's
`Correct Answer`), that column is the correct option and each question's options are shuffled, seeded by
`seed` and the question's id (so the same seed gives the same order in any process); the row records
`option_order` (the columns in the order shown).

Rows that cannot be used are skipped and counted per source and reason. A source none of whose rows is
usable stops the load with one line naming the file, the field it lacks, the fields it has and a mapping
that would fix it: a benchmark never vanishes behind a warning. Every row gets a stable `id`: a hash of
its source, question and options before any shuffle (not Python's salted `hash`); a duplicated question
gets `-1`, `-2`, ... after the first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import string
from collections import Counter
from pathlib import Path

from meds1.errors import UserError
from meds1.evaluation.permutations import reorder
from meds1.evaluation.suite_spec import SUITE_FILE_SUFFIXES, SUITE_HUB_SCHEME, SuiteSpec, suite_specs
from meds1.hub import load_hub_dataset, reading, resolve_data_path

log = logging.getLogger(__name__)

LETTERS = string.ascii_uppercase
LETTER_SET = frozenset(LETTERS)
ID_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps(..., ensure_ascii=False) without a new encoder
LETTER = re.compile(r"\s*\(?([A-Za-z])[).:]?\s*")
SHOWN_FIELDS = 8  # fields listed in the no-usable-row error
# Column names benchmarks use, tried in order when suggesting a mapping.
GUESSES = {
    "question": ("question", "Question", "problem", "prompt", "stem", "input", "query"),
    "options": ("options", "choices", "Options", "candidates"),
    "answer": ("answer_idx", "label", "answer", "Answer", "answer_letter", "cop", "gold", "target"),
}
PROBLEM_FIELD = {  # skip reason -> the SuiteSpec field that would fix it
    "missing_question": "question",
    "missing_options": "options",
    "option_keys_not_letters": "options",
    "missing_answer": "answer",
    "answer_not_an_option": "answer",
    "answer_text_unmatched": "answer",
    "answer_text_ambiguous": "answer",
}


def question_id(source: str, question: str, options: dict[str, str]) -> str:
    """A stable id (not Python's salted hash) of a question's content."""
    text = ID_JSON.encode([source, question, sorted(options.items())])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


TABLE_SUFFIXES = (".csv", ".parquet")  # tables as benchmarks ship them (GPQA's gpqa_diamond.csv)


def _read_table(file: Path) -> list[dict]:
    import pandas as pd

    table = pd.read_csv(file) if file.suffix == ".csv" else pd.read_parquet(file)
    table = table.astype(object).where(table.notna(), None)  # an empty cell is missing, not "nan"
    return [{"source": file.stem, **row} for row in table.to_dict("records")]


def _read_file(file: Path) -> list[dict]:
    if file.suffix in TABLE_SUFFIXES:
        return _read_table(file)
    if file.suffix == ".jsonl":
        rows, stem = [], file.stem
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"eval file {file}: line {number} is not JSON") from None
            rows.append({"source": stem, **row} if isinstance(row, dict) else row)
        return rows
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"eval file {file} is not valid JSON ({error.msg}, line {error.lineno})") from None
    if isinstance(data, dict):
        return [
            {**row, "source": source} if isinstance(row, dict) else row
            for source, rows in data.items()
            for row in (rows if isinstance(rows, list) else [rows])
        ]
    if isinstance(data, list):
        stem = file.stem
        return [{"source": stem, **row} if isinstance(row, dict) else row for row in data]
    raise UserError(f"eval file {file} holds neither an object {{source: [rows]}} nor a list of rows")


def _read_hub(spec: SuiteSpec, key: str, local: str) -> tuple[list[dict], str | None]:
    """(rows of the hub dataset `spec.path` (hf://OWNER/NAME) at `spec.revision`, the commit they were
    read at: meds1.hub). A failed read names `key` and the `local` copy to set it to."""
    name = spec.path[len(SUITE_HUB_SCHEME) :]
    pin_key = "`revision: <commit>` in its eval.suite entry"
    hub = {"repo_type": "dataset", "revision": spec.revision, "files": spec.data_files}
    with reading(spec.path, key, local=local, **hub):
        dataset, commit = load_hub_dataset(
            name, spec.config, spec.split, spec.revision, spec.data_files, pin_key
        )
    source = f"{name.rstrip('/').split('/')[-1]}_{spec.split}"
    return [{"source": source, **row} for row in dataset.to_list()], commit


def read_entry(spec: SuiteSpec, key: str, entry) -> list[tuple[str, list, str | None]]:
    """(label, raw rows, hub commit or None) for each file of one suite entry (a file, directory or hub
    dataset); `key` names the entry, `entry` is it as written (a string or a mapping)."""
    if spec.path.startswith(SUITE_HUB_SCHEME):
        if isinstance(entry, str):  # the local copy keeps the URI's parameters
            query = entry.partition("?")[2]
            return [(spec.path, *_read_hub(spec, key, "hf://{dir}" + (f"?{query}" if query else "")))]
        return [(spec.path, *_read_hub(spec, f"{key}.path", "hf://{dir}"))]
    path = resolve_data_path(spec.path)
    if spec.data_files:
        files = [path / name for name in _as_list(spec.data_files)]
        absent = [str(file) for file in files if not file.is_file()]
        if absent:
            raise UserError(f"eval file {absent[0]} does not exist (data_files of {spec.path})")
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUITE_FILE_SUFFIXES)
        if not files:
            raise UserError(f"eval suite directory {path} holds no {', '.join(SUITE_FILE_SUFFIXES)} files")
    elif path.is_file():
        files = [path]
    else:
        hint = "; the default suite reads $MEDS1_EVAL_DATA" if key.startswith("eval.suite") else ""
        raise UserError(f"file {spec.path} does not exist ({key}{hint})")
    return [(file.name, _read_file(file), None) for file in files]


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _options(row: dict, spec: SuiteSpec) -> tuple[dict[str, str], dict[str, str]] | str:
    """({letter: text}, {letter: column} for option columns) or a skip reason."""
    if isinstance(spec.options, list):
        columns = dict(zip(LETTERS, spec.options, strict=False))
        raw = {letter: row.get(column) for letter, column in columns.items()}
    else:
        columns, raw = {}, row.get(spec.options)
        if isinstance(raw, str) and raw.lstrip()[:1] in ("{", "["):  # options stored as JSON text
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                return "missing_options"
        if isinstance(raw, list):
            raw = dict(zip(LETTERS, raw, strict=False))
        if not isinstance(raw, dict):
            return "missing_options"
    options = {}
    for key, value in raw.items():  # a loop, not a comprehension: this runs for every question
        text = value if type(value) is str else None if value is None else str(value)
        if text and not text.isspace():
            options[(key if type(key) is str else str(key)).strip().upper()] = text
    if len(options) < 2:
        return "missing_options"
    if not options.keys() <= LETTER_SET:
        return "option_keys_not_letters"
    return options, columns


def _answer(value, options: dict[str, str], answer_format: str | None) -> str:
    """The letter of the correct option, or a skip reason (see PROBLEM_FIELD)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "missing_answer"
    if isinstance(value, float) and value.is_integer():  # an integer column with gaps, read by pandas
        value = int(value)
    if answer_format == "text":
        wanted = " ".join(str(value).split())
        found = [letter for letter, text in options.items() if " ".join(text.split()) == wanted]
        if len(found) != 1:
            return "answer_text_ambiguous" if found else "answer_text_unmatched"
        return found[0]
    if answer_format in ("index0", "index1") or (
        answer_format is None and isinstance(value, int) and not isinstance(value, bool)
    ):
        index = value if isinstance(value, int) else int(value) if str(value).strip().isdigit() else -1
        index -= answer_format == "index1"
        letter = LETTERS[index] if 0 <= index < len(LETTERS) and not isinstance(value, bool) else None
    else:
        match = LETTER.fullmatch(str(value))
        letter = match.group(1).upper() if match else None
    return letter if letter in options else "answer_not_an_option"


def normalize(row: object, spec: SuiteSpec | None = None) -> tuple[dict | None, str | None]:
    """(the row with `source`, `question`, `options` {letter: text}, `answer_idx` and its content `id`,
    None) or (None, skip reason)."""
    spec = spec or SuiteSpec(path="")
    if not isinstance(row, dict):
        return None, "not_an_object"
    question = row.get(spec.question)
    if not isinstance(question, str) or not question.strip():
        return None, "missing_question"
    found = _options(row, spec)
    if isinstance(found, str):
        return None, found
    options, columns = found
    if spec.answer in columns.values():  # the correct option is a column of its own
        key = next(letter for letter, column in columns.items() if column == spec.answer)
        key = key if key in options else "missing_answer"
    else:
        key = _answer(row.get(spec.answer), options, spec.answer_format)
    if key not in options:
        return None, key
    out = dict(row) if spec.keep is None else {c: row[c] for c in spec.keep if c in row}
    source = spec.name or str(row.get("source") or "unknown")
    out.update(source=source, question=question, options=options, answer_idx=key)
    if spec.keep is not None:
        out["answer"] = options[key]
    out["id"] = question_id(source, question, options)
    shuffle = spec.shuffle if spec.shuffle is not None else spec.answer in columns.values()
    if shuffle:
        _shuffle(out, columns, spec.seed)
    return out, None


def _shuffle(row: dict, columns: dict[str, str], seed: int) -> None:
    """Shuffle `row`'s options in place, seeded by `seed` and its id (a string seed is hashed with SHA-512,
    never Python's salted `hash`), recording the order in `option_order` and the seed in `shuffle_seed`."""
    order = list(row["options"])
    random.Random(f"{seed}:{row['id']}").shuffle(order)
    reorder(row, order, columns)
    row["shuffle_seed"] = seed


def load_suite(
    entries: list, max_per_source: int | None = None, key: str = "eval.suite"
) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """(rows with `id` and `source`, {source: {skip reason: rows}} for the rows left out)."""
    if not entries:
        raise UserError(f"{key} is empty: name at least one eval file, directory or hf:// dataset")
    rows: list[dict] = []
    skipped: dict[str, Counter] = {}
    for spec, label, raw_rows, commit in read_suite(entries, key):
        file_rows = _normalize_file(label, raw_rows, spec, skipped)
        for row in file_rows if commit else ():
            row["revision"] = commit
        rows += file_rows
    if max_per_source is not None:
        rows = first_per_source(rows, max_per_source)
    seen: Counter = Counter()
    for row in rows:
        base = row["id"]
        row["id"] = base if not seen[base] else f"{base}-{seen[base]}"
        seen[base] += 1
    for source, reasons in skipped.items():
        log.warning("eval: %s: skipped %d unusable rows: %s", source, sum(reasons.values()), dict(reasons))
    return rows, {source: dict(reasons) for source, reasons in skipped.items()}


def read_suite(entries: list, key: str):
    """Each file of each suite entry as (its spec, label, raw rows, commit read or None); a bad entry is one
    line naming `key[index]`."""
    try:
        specs = suite_specs(list(entries), key)
    except ValueError as problem:
        raise UserError(str(problem)) from None
    for index, (entry, spec) in enumerate(zip(entries, specs, strict=True)):
        for label, raw_rows, commit in read_entry(spec, f"{key}[{index}]", entry):
            yield spec, label, raw_rows, commit


def _normalize_file(label: str, raw_rows: list, spec: SuiteSpec, skipped: dict[str, Counter]) -> list[dict]:
    """The usable rows of one file; raises when a source of it has none (see the module doc)."""
    usable = []
    reasons: dict[str, Counter] = {}
    examples: dict[str, dict] = {}
    for raw in raw_rows:
        row, problem = normalize(raw, spec)
        if row is not None:
            usable.append(row)
            continue
        if isinstance(raw, dict):
            source = spec.name or str(raw.get("source") or "unknown")
            examples.setdefault(source, raw)
        else:  # not a row at all: counted under the file
            source = spec.name or Path(label).stem
        reasons.setdefault(source, Counter())[problem] += 1
    if not usable:
        source, counts = next(iter(reasons.items()), (Path(label).stem, Counter()))
        raise UserError(_no_usable_rows(label, source, len(raw_rows), counts, examples.get(source), spec))
    used = Counter(row["source"] for row in usable)
    for source, example in examples.items():
        if not used[source]:
            count = sum(reasons[source].values())
            raise UserError(_no_usable_rows(label, source, count, reasons[source], example, spec))
    for source, counts in reasons.items():
        skipped.setdefault(source, Counter()).update(counts)
    return usable


def _no_usable_rows(
    label: str, source: str, count: int, reasons: Counter, example: dict | None, spec: SuiteSpec
) -> str:
    """One line: the file, the field it lacks, the fields it has, the mapping that would fix it."""
    where = label if Path(label).stem == source else f"{label} (source {source})"
    if not count:
        return f"{where}: holds no rows (eval suite entry {spec.path})"
    reason = reasons.most_common(1)[0][0]
    field = PROBLEM_FIELD.get(reason)
    if example is None or field is None:
        return f"{where}: none of {count} rows usable: rows are not JSON objects ({dict(reasons)})"
    fields = [str(name) for name in example if name != "source"]  # `source` is added by the reader
    shown = ", ".join(fields[:SHOWN_FIELDS]) + (", ..." if len(fields) > SHOWN_FIELDS else "")
    current = getattr(spec, field)
    value = example.get(current) if isinstance(current, str) else None
    lacks = {
        "option_keys_not_letters": f"{current!r} is not keyed by letters",
        "answer_not_an_option": f"{current!r} ({value!r}) is no option's {spec.answer_format or 'letter'}",
        "answer_text_unmatched": f"{current!r} ({value!r}) matches no option's text",
        "answer_text_ambiguous": f"{current!r} ({value!r}) matches several options' texts",
    }.get(reason, f"no {'usable ' if current in example else ''}{current!r}")
    return (
        f"{where}: none of {count} rows usable: {lacks} (fields: {shown}); map it, e.g. "
        f"{{path: {spec.path}, {_suggestion(field, reason, example, current)}}}"
    )


def _suggestion(field: str, reason: str, example: dict, current) -> str:
    present = [name for name in GUESSES[field] if name in example and name != current]
    if field == "options" and not present:
        letters = [letter for letter in LETTERS if letter in example]
        column = f"[{', '.join(letters)}]" if len(letters) > 1 else "[COLUMN_A, COLUMN_B, ...]"
    else:
        column = present[0] if present else (current if reason.startswith("answer_") else "COLUMN")
    suggestion = f"{field}: {column}"
    if field == "answer":
        value = example.get(column)
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            suggestion += ", answer_format: index0 (or index1)"
        elif isinstance(value, str) and not LETTER.fullmatch(value):
            suggestion += ", answer_format: text"
    return suggestion


def suite_record(rows: list[dict]) -> dict[str, dict]:
    """{source: {questions, fingerprint, revisions}}: what each source's numbers were measured on. The
    fingerprint hashes the sorted question ids (content hashes), so the same questions give the same
    fingerprint on any machine, and a benchmark that changed under an unpinned hub branch does not."""
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    record = {}
    for source, source_rows in by_source.items():
        ids = "\n".join(sorted(row["id"] for row in source_rows))
        record[source] = {
            "questions": len(source_rows),
            "fingerprint": hashlib.sha256(ids.encode()).hexdigest()[:16],
            "revisions": sorted({row["revision"] for row in source_rows if row.get("revision")}),
        }
    return record


def first_per_source(rows: list[dict], limit: int) -> list[dict]:
    """The first `limit` rows of each source, in order."""
    taken: Counter = Counter()
    kept = []
    for row in rows:
        if taken[row["source"]] < limit:
            taken[row["source"]] += 1
            kept.append(row)
    return kept
