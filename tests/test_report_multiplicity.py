"""Statistics for a grid: Holm / Benjamini-Hochberg adjusted p-values and the minimum detectable effect."""

from __future__ import annotations

import csv
import shutil

import pytest

from meds1.report.multiplicity import benjamini_hochberg, holm, minimum_detectable_effect
from meds1.stages import report

BASELINE = "med-s1-1k__curation.n_samples=1000"


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> kept monotone at 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: 0.04 x4/4 = 0.04, 0.03 x4/3 = 0.04, 0.01 x4/2 = 0.02, 0.005 x4/1 = 0.02
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and benjamini_hochberg([]) == []


def test_minimum_detectable_effect_at_medqas_size():
    # (1.960 + 0.842) * sqrt((0.25 + 0.25) / 1273) = 0.0555: MedQA cannot tell apart arms 5 points apart
    assert minimum_detectable_effect(1273, 0.5, 0.5) == pytest.approx(0.0555, abs=5e-4)
    assert minimum_detectable_effect(4 * 1273, 0.5, 0.5) == pytest.approx(0.0555 / 2, abs=5e-4)


@pytest.mark.parametrize(("method", "label"), [("holm", "Holm"), ("bh", "Benjamini-Hochberg")])
def test_report_adjusts_every_paired_row_and_marks_noise(
    report_registry, make_config, tmp_path, method, label
):
    shutil.copytree(report_registry, tmp_path / "out")
    report.run(make_config("stage=report", f'report.baseline="{BASELINE}"', f"report.adjust={method}"))
    rows = list(csv.DictReader((tmp_path / "out" / "report" / "paired.csv").open()))
    p = [float(r["p_value"]) for r in rows]
    expected = (holm if method == "holm" else benjamini_hochberg)(p)
    assert [float(r["p_adjusted"]) for r in rows] == pytest.approx(expected)
    for row in rows:
        mde = minimum_detectable_effect(
            int(row["n"]), float(row["baseline_accuracy"]), float(row["accuracy"])
        )
        assert float(row["mde"]) == pytest.approx(mde)
        assert (row["within_noise"] == "True") == (abs(float(row["difference"])) < mde)
    text = (tmp_path / "out" / "report" / "results.md").read_text()
    assert f"adjusted: {label} over every row of this table" in text and "| p adjusted | MDE |" in text
