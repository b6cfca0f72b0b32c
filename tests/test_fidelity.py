"""docs/fidelity.md states the values every shipped experiment composes to; this keeps them equal.

In the table's "meds1 default" column each code span `key=value` is a claim about every shipped
experiment except the demo, and `name,name: key=value` (or `*: key=value`) about the experiments named.
"""

from __future__ import annotations

import math
import re
from enum import Enum

import pytest
import yaml

from meds1.config.compose import CONF_DIR, compose
from tests.conftest import REPO

PAGE = "docs/fidelity.md"
SECTION = "# Fidelity to the published sources"
CLAIM = re.compile(r"^(?:(?P<scope>[\w.,*-]+):\s*)?(?P<key>[A-Za-z_][\w.]*)=(?P<value>.*)$")
SHIPPED = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.startswith("demo"))


def table_rows() -> list[list[str]]:
    text = REPO.joinpath(PAGE).read_text()
    assert SECTION in text, f"{PAGE} lacks the section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]  # after the header and its rule


def claims() -> list[tuple[str, str, str, str]]:
    """(item, experiment, key, value) for every claim in the table's "meds1 default" column."""
    found = []
    for row in table_rows():
        assert len(row) == 4, f"fidelity row needs 4 cells (item | reference | meds1 default | switch): {row}"
        for span in re.findall(r"`([^`]+)`", row[2]):
            match = CLAIM.match(span)
            if not match:
                continue
            scope = match["scope"]
            names = SHIPPED if scope in (None, "*") else scope.split(",")
            for name in names:
                assert name in SHIPPED, f"fidelity table names unknown experiment {name!r} in {span!r}"
                found.append((row[0], name, match["key"], match["value"]))
    return found


def lookup(config, key: str):
    value = config
    for part in key.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value.value if isinstance(value, Enum) else value


def same(actual, expected) -> bool:
    if isinstance(expected, float) or (isinstance(actual, float) and isinstance(expected, int)):
        return actual is not None and math.isclose(float(actual), float(expected), rel_tol=1e-9)
    return actual == expected


def test_the_table_states_enough_values():
    assert len({(key, value) for _, _, key, value in claims()}) >= 3


@pytest.mark.parametrize("experiment", SHIPPED)
def test_experiment_composes_to_the_values_readme_states(experiment):
    config = compose([f"experiment={experiment}"])
    for item, name, key, value in claims():
        if name != experiment:
            continue
        expected = yaml.safe_load(value)
        actual = lookup(config, key)
        assert same(actual, expected), f"{PAGE} row {item!r}: {experiment} has {key}={actual!r}"
