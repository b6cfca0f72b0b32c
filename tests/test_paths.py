import pytest

from meds1.hub import resolve_data_path
from meds1.store.identity import (
    config_hash,
    make_slug,
    result_overrides,
    safe_name,
    stage_sections,
    stage_slug,
)
from meds1.store.workspace import stage_dir


def test_stage_and_launcher_overrides_do_not_change_the_slug(make_config):
    a = make_config("experiment=random-1k", "stage=curate")
    b = make_config("experiment=random-1k", "stage=train", "force=true", "hydra/launcher=local")
    for stage in ("curate", "train", "eval"):
        assert stage_dir(a, stage) == stage_dir(b, stage)
    assert stage_dir(a, "curate").parent.name == "random-1k"


def test_sample_size_sweep_gets_separate_slugs(make_config):
    dirs = {
        stage_dir(make_config("experiment=random-1k", f"curation.n_samples={n}"), "train") for n in (1, 2, 3)
    }
    assert len(dirs) == 3


def test_trainer_override_shares_curation_but_not_training(make_config):
    a = make_config("experiment=random-1k", "trainer.learning_rate=1e-5")
    b = make_config("experiment=random-1k", "trainer.learning_rate=2e-5")
    assert stage_dir(a, "curate") == stage_dir(b, "curate")
    assert stage_dir(a, "train") != stage_dir(b, "train")


def test_eval_override_reuses_training(make_config):
    a = make_config("experiment=random-1k")
    b = make_config("experiment=random-1k", "eval.max_new_tokens=64")
    assert stage_dir(a, "train") == stage_dir(b, "train")
    assert stage_dir(a, "eval") != stage_dir(b, "eval")


def test_base_experiment_eval_ignores_curation_and_trainer():
    assert stage_sections(["eval"], "eval") == {"model", "seed", "eval", "inference"}
    assert result_overrides(["trainer.learning_rate=1", "model=tiny", "paths.root=/x"], {"model"}) == [
        "model=tiny"
    ]


def test_slug_is_name_plus_sorted_result_overrides(make_config):
    cfg = make_config("experiment=random-1k", "seed=1", "curation.n_samples=500", "stage=curate")
    assert stage_dir(cfg, "curate").parent.name == "random-1k__curation.n_samples=500__seed=1"
    assert make_slug("a", ["b=1"]) == "a__b=1"


@pytest.mark.parametrize(
    "hostile", ["../../etc/passwd", "/abs/path", "a/../../b", "..", "x" * 400, "a b;rm -rf ~", ""]
)
def test_hostile_names_stay_one_safe_directory(hostile, tmp_path):
    name = safe_name(hostile)
    assert name and "/" not in name and ".." not in name and len(name) <= 120
    assert not name.startswith(".")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_long_slugs_stay_distinct():
    assert safe_name("x" * 300 + "1") != safe_name("x" * 300 + "2")


def test_hostile_override_value_cannot_escape_root(make_config, tmp_path):
    cfg = make_config("experiment=demo", "curation.source.path=../../../../etc/x")
    directory = stage_dir(cfg, "curate")
    assert directory.resolve().is_relative_to((tmp_path / "out").resolve())


def test_package_data_paths_resolve():
    assert resolve_data_path("pkg://meds1/data/demo_eval.json").is_file()


def test_an_override_that_restates_the_experiment_names_no_slug(make_config):
    plain = make_config("experiment=demo")
    own_size = plain.curation.n_samples
    restated = make_config("experiment=demo", f"curation.n_samples={own_size}", "model=tiny", "seed=42")
    assert restated.overrides[0] == "experiment=demo" and len(restated.overrides) == 3  # + the two paths
    for stage in ("curate", "train", "eval"):
        assert stage_dir(restated, stage) == stage_dir(plain, stage)
    changed = make_config("experiment=demo", f"curation.n_samples={own_size + 1}", "model=tiny")
    assert stage_dir(changed, "curate").parent.name == f"demo__curation.n_samples={own_size + 1}"


def test_an_override_undone_by_a_later_one_names_no_slug(make_config):
    cfg = make_config("experiment=random-1k", "seed=7", "seed=42")
    assert stage_dir(cfg, "curate").parent.name == "random-1k"
    twice = make_config("experiment=random-1k", "seed=7", "seed=7")
    assert stage_dir(twice, "curate") == stage_dir(make_config("experiment=random-1k", "seed=7"), "curate")


def test_a_group_choice_that_changes_the_config_names_the_slug(make_config):
    cfg = make_config("experiment=demo", "curation=random")
    assert stage_dir(cfg, "curate").parent.name == "demo__curation=random"


def test_an_override_names_every_stage_whose_resolved_config_it_changes(make_config):
    # A curation checked against `${eval.suite}` (the user's choice): another eval suite curates anew (and
    # so would RL, whose questions are checked against the eval suite by default).
    follows = "curation.decontamination.suite=${eval.suite}"
    plain = make_config("experiment=demo", "stage=curate", follows)
    mine = make_config("experiment=demo", "stage=curate", follows, "eval.suite=[my_eval.json]")
    assert mine.override_scope["eval.suite=[my_eval.json]"] == ["curation", "eval", "rl"]
    assert mine.curation.decontamination.suite == ["my_eval.json"]
    for stage in ("curate", "train", "eval"):
        assert stage_dir(mine, stage) != stage_dir(plain, stage)
        assert "__eval.suite=-my_eval.json-" in stage_slug(mine, stage)


def test_another_eval_suite_evaluates_the_model_already_trained(make_config):
    plain = make_config("experiment=demo")
    other = make_config("experiment=demo", "stage=eval", "eval.suite=[medbullets_op4.jsonl]")
    assert other.override_scope["eval.suite=[medbullets_op4.jsonl]"] == ["eval"]
    for stage in ("curate", "train"):
        assert stage_dir(other, stage) == stage_dir(plain, stage)
    assert stage_slug(other, "eval").startswith("demo__eval.suite=-medbullets_op4.jsonl-")


@pytest.mark.parametrize(
    "override",
    [
        "eval.suite=[my_eval.json]",
        "eval.max_new_tokens=64",
        "trainer.learning_rate=1e-3",
        "curation.n_samples=5",
        "seed=3",
        "model.revision=abc",
        "curation.format.layout=s1",
        "stages=[eval]",
        "trainer.resources.gpus=4",
        "inference.api_key=not-a-result",
        "report.group_by=seed",
        "inference.base_url=http://node-2:8000/v1",
        "inference.max_concurrency=3",
        "inference.served_model=other",
        "curation.trace.llm.inference.timeout_s=5",
        "curation.trace.llm.inference.max_retries=9",
        "curation.trace.llm.inference.requests_per_minute=60",
        "curation.trace.llm.model.path=other-model",
    ],
)
def test_a_stage_slug_changes_exactly_when_its_config_hash_does(make_config, override):
    plain, changed = make_config("experiment=demo"), make_config("experiment=demo", override)
    for stage in ("curate", "train", "eval"):
        same_hash = config_hash(plain, stage) == config_hash(changed, stage)
        assert (stage_slug(plain, stage) == stage_slug(changed, stage)) == same_hash, stage


def test_slugs_differ_where_cleaning_the_text_would_merge_them(make_config):
    pairs = [
        ("curation.source.path='~/data/rows.jsonl'", "curation.source.path=/data/rows.jsonl"),
        ("curation.source.path=a/b", "curation.source.path=a-b"),
        ("curation.specialty.correction='Be brief.'", "curation.specialty.correction='Be brief'"),
    ]
    for first, second in pairs:
        a, b = make_config("experiment=demo", first), make_config("experiment=demo", second)
        assert config_hash(a, "curate") != config_hash(b, "curate")
        assert stage_slug(a, "curate") != stage_slug(b, "curate"), (first, second)
        assert stage_slug(a, "curate").startswith("demo__curation.")  # still readable


def tricky_values() -> list[str]:
    """Values that one cleaning step would map onto each other: separators, dots, spaces, case, length."""
    stems = ["rows.jsonl", "a/b", "a b", "Be brief.", "x" * 130, "..", "~", "a,b", "a=b", "ä"]
    variants = set()
    for stem in stems:
        for shape in ("{}", "/{}", "~/{}", "{}/", "./{}", "{}.", " {}", "{}-", "-{}", "{}//", "{}\n"):
            text = shape.format(stem)
            variants |= {text, text.replace("/", "-"), text.replace(" ", "-"), text.upper(), text + "1"}
    return sorted(variants)


def test_distinct_override_values_give_distinct_slugs():
    values = tricky_values()
    slugs = {make_slug("demo", [f"curation.source.path={value}"]) for value in values}
    assert len(slugs) == len(values) > 300
    for slug in slugs:
        assert "/" not in slug and len(slug) <= 120 and safe_name(slug) == slug  # a slug is already safe


def test_distinct_override_lists_give_distinct_slugs():
    lists = [
        ["a=1__b=2"],
        ["a=1", "b=2"],
        ["a=1_", "_b=2"],
        ["a=1", "__b=2"],
        ["a=1___b=2"],
        *([f"curation.source.path={value}"] for value in tricky_values()[:50]),
        *([f"curation.source.path={value}", "seed=1"] for value in tricky_values()[:50]),
    ]
    slugs = {make_slug("demo", overrides) for overrides in lists}
    assert len(slugs) == len(lists)
    assert make_slug("demo", ["seed=1", "curation.n_samples=5"]) == "demo__seed=1__curation.n_samples=5"


@pytest.mark.parametrize(
    ("before", "after", "differs"),
    [
        ({"a": 1, "resources": {"gpus": 1}}, {"a": 1, "resources": {"gpus": 4}}, False),  # where it runs
        ({"api_key": "x", "b": [1]}, {"api_key": "y", "b": [1]}, False),  # a secret's value is not hashed
        ({"api_key": None}, {"api_key": "y"}, True),  # ... whether one is set is
        ({"b": [{"resources": 1, "c": 2}]}, {"b": [{"resources": 2, "c": 2}]}, False),
        ({"b": [{"c": 2}]}, {"b": [{"c": 3}]}, True),
        ({"b": [1, 2]}, {"b": [1]}, True),
        ({"b": {"c": None}}, {"b": {}}, True),
        ({"b": 1}, {"b": "1"}, True),
        ({"b": {"hf_token": "s", "d": 1}}, {"b": {"hf_token": "t", "d": 1}}, False),
        ({"b": {"hf_token": "s", "d": 1}}, {"b": {"hf_token": "t", "d": 2}}, True),
        (
            {"inference": {"base_url": "a", "served_model": "m"}},
            {"inference": {"base_url": "b", "served_model": "m"}},
            False,  # where the endpoint lives
        ),
        (
            {"inference": {"base_url": "a", "served_model": "m"}},
            {"inference": {"base_url": "a", "served_model": "n"}},
            True,  # which model answers
        ),
        ({"base_url": "a"}, {"base_url": "b"}, True),  # not an inference setting: a result value
    ],
)
def test_what_differs_for_a_slug_is_what_is_hashed(before, after, differs):
    from meds1.store.identity import result_differs, result_view

    assert result_differs(before, after) == differs
    assert (result_view(before) != result_view(after)) == differs


def test_where_an_endpoint_lives_is_not_what_the_experiment_is(make_config):
    from meds1.store.identity import result_differs

    plain = make_config("experiment=demo")
    moved = make_config(
        "experiment=demo",
        "curation.trace.llm.inference.base_url=http://127.0.0.1:8765/v1",
        "inference.base_url=http://node-2:8000/v1",
        "inference.max_concurrency=64",
        "inference.timeout_s=600",
    )
    assert len(moved.overrides) == 7 and all(moved.override_scope[o] == [] for o in moved.overrides[1:5])
    for stage in ("curate", "train", "eval"):
        assert stage_slug(moved, stage) == stage_slug(plain, stage) == "demo"
        assert config_hash(moved, stage) == config_hash(plain, stage)
    assert result_differs({"served_model": "a"}, {"served_model": "b"}, "inference")


def test_a_sweep_too_long_for_a_name_keeps_what_varies_readable():
    overrides = ["curation.trace.perturbation.rate=0.33", "curation.trace.transforms=[step]"]
    slugs = {
        kind: make_slug("demo", [*overrides[:1], f"curation.trace.perturbation.type={kind}", *overrides[1:]])
        for kind in ("skip", "shuffle", "add_irrelevant", "collapse_consecutive", "answer")
    }
    for kind, slug in slugs.items():
        assert slug.startswith(f"demo__perturbation.rate=0.33__perturbation.type={kind}__trace.transforms=")
        assert len(slug) <= 120 and safe_name(slug) == slug
    assert len(set(slugs.values())) == 5
    path = "curation.source.path=/home/someone/projects/medical-data/2025/rows_fixed_v2.jsonl"
    long = make_slug("demo", [path, "curation.n_samples=40", "trainer.learning_rate=1e-5"])
    assert long.startswith("demo__source.path=rows_fixed_v2.jsonl-")
    assert "__curation.n_samples=40__trainer.learning_rate=1e-5-" in long
    assert make_slug("demo", ["curation.n_samples=40"]) == "demo__curation.n_samples=40"  # short: as before
