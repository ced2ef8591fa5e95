"""Registries in use: a plugin's metric, judge and data builder, installed through the
``pluralign.plugins`` entry point, are looked up and used by evaluation and the data CLI."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app
from pluralign.data.records import read_examples, write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.eval.evaluate import EvalConfig, build_judge, evaluate, group_prompts
from pluralign.eval.judges import EmbeddingJudge, RatingJudge
from pluralign.eval.metric_inputs import scorer_of
from pluralign.eval.metrics import MetricResult, bpc, cbc, score_jsd, score_rs
from pluralign.eval.predictions import PromptPrediction
from pluralign.eval.scoring import metric_inputs, registered_metrics
from pluralign.registry import BUILDERS, JUDGES, METRICS

PLUGIN_MODULE = "fake_pluralign_plugin"

PLUGIN_SOURCE = '''
"""A third-party plugin: one metric, one judge and one data builder."""

from __future__ import annotations

from dataclasses import dataclass

from pluralign.config import YamlConfig
from pluralign.data.builders import BuildReport, BuildResult
from pluralign.data.toy import conflicting_opinions
from pluralign.eval.metrics import MetricResult, mean_with_interval
from pluralign.registry import BUILDERS, JUDGES, METRICS


@METRICS.register("belief_mass")
def belief_mass(predictions, *, seed=0):
    """Mean probability of the belief markers at the belief slot."""
    masses = [p.mass for p in predictions if p.mass is not None]
    mean, low, high = mean_with_interval(masses, seed=seed)
    return MetricResult("belief_mass", mean, len(masses), low, high, {"prompts": len(masses)})


class AlwaysYes:
    """Judges every response yes."""

    name = "always-yes"

    def judge(self, items):
        return ["yes"] * len(items)


JUDGES.register("always-yes", AlwaysYes)


@dataclass
class ToyConfig(YamlConfig):
    questions: int = 2
    seed: int = 0


@BUILDERS.register("plugin-toy")
def build_toy(config: ToyConfig) -> BuildResult:
    """Toy conflicting opinions, every record in train."""
    records = conflicting_opinions(config.questions, 4, seed=config.seed)
    report = BuildReport("plugin-toy", "toy", config.seed)
    report.counts["records"] = len(records)
    return BuildResult({"train": records}, report)
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """The plugin installed as a distribution on sys.path (dist-info with its entry point),
    not yet imported; its entries are unregistered afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{PLUGIN_MODULE}.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    dist = site / "fake_pluralign_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-pluralign-plugin\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[pluralign.plugins]\nfake = {PLUGIN_MODULE}\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop(PLUGIN_MODULE, None)
    for registry, name in ((METRICS, "belief_mass"), (JUDGES, "always-yes"),
                           (BUILDERS, "plugin-toy")):
        if name in registry:
            registry.unregister(name)


@pytest.fixture
def records_file(tmp_path):
    path = tmp_path / "test.jsonl"
    write_examples(path, conflicting_opinions(3, 4, seed=5))
    return path


def _rows(out):
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_a_plugin_metric_lands_in_eval_json_and_the_report(installed_plugin, records_file,
                                                           tmp_path):
    assert "belief_mass" not in METRICS  # evaluation itself loads the plugin
    out = tmp_path / "out"
    evaluate(EvalConfig(models=["tiny"], data=str(records_file), output_dir=str(out), n_samples=0,
                        belief_samples=0, device="cpu", progress=False))
    metrics = json.loads((out / "eval.json").read_text())["models"]["tiny"]["metrics"]
    # Registration order: the built-in JSD first, the plugin's metric, then the diagnostics.
    assert list(metrics) == ["jsd", "belief_mass", "marker_mass_after_description"]
    masses = [row["mass"] for row in _rows(out)]
    assert len(masses) == 3 and all(0.0 < m <= 1.0 for m in masses)
    mass = metrics["belief_mass"]
    assert mass["value"] == pytest.approx(np.mean(masses))
    assert mass["n"] == 3 and mass["counts"] == {"prompts": 3}
    assert mass["ci_low"] <= mass["value"] <= mass["ci_high"]
    shown = f"{mass['value']:.3f} [{mass['ci_low']:.3f}, {mass['ci_high']:.3f}] (n=3)"
    markdown = (out / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| model |"))
    assert header.split(" | ")[3] == "belief_mass"  # after JSD: the empty built-ins are left out
    assert f"| {shown} |" in markdown
    page = (out / "report.html").read_text()
    value, interval = shown.split(" ", 1)  # the HTML puts the interval on its own line
    assert "<th>belief_mass</th>" in page
    assert f"<td>{value}<br><span class='ci'>{interval}</span></td>" in page


def test_a_plugin_judge_is_looked_up_by_name(installed_plugin, records_file, tmp_path):
    assert "always-yes" not in JUDGES
    config = EvalConfig(models=["tiny"], data=str(records_file), output_dir=str(tmp_path / "out"),
                        judge="always-yes", n_samples=2, belief_samples=0, max_new_tokens=4,
                        device="cpu", progress=False)
    assert type(build_judge(config)).__name__ == "AlwaysYes"
    result = evaluate(config)
    verdicts = [g["verdict"] for row in _rows(result.out_dir) for g in row["generations"]]
    assert len(verdicts) == 6 and set(verdicts) <= {"yes", "empty"}
    bpc_result = result.evaluations[0].metrics["bpc"]
    assert bpc_result.counts["yes"] == verdicts.count("yes")
    assert bpc_result.n == 6
    assert bpc_result.value == pytest.approx(verdicts.count("yes") / 6)
    assert "belief_mass" in result.evaluations[0].metrics


def test_builtin_judges_take_their_options_from_the_config():
    config = EvalConfig(models=["tiny"], data="x", judge="embedding", judge_min_similarity=0.5,
                        embedder="some/folder")
    judge = build_judge(config)
    assert isinstance(judge, EmbeddingJudge)
    assert (judge.min_similarity, judge.embedder) == (0.5, "some/folder")
    rating = build_judge(EvalConfig(models=["tiny"], data="x", judge="rating", embedder="e"))
    assert isinstance(rating, RatingJudge) and rating.embedder == "e"
    with pytest.raises(ValueError, match='judge: unknown judge "nope"'):
        EvalConfig(models=["tiny"], data="x", judge="nope")


def test_builtin_metrics_go_through_the_same_lookup():
    assert scorer_of(METRICS.get("jsd")) is score_jsd
    assert scorer_of(METRICS.get("rs")) is score_rs
    # CBC and BPC take evaluation inputs as they are: the metric is its own scorer.
    assert scorer_of(METRICS.get("cbc")) is cbc and scorer_of(METRICS.get("bpc")) is bpc
    groups = group_prompts(conflicting_opinions(2, 4, seed=2))
    predictions = [PromptPrediction(group=g, predicted=g.target) for g in groups]
    inputs = metric_inputs(predictions, seed=0)
    # Without generations CBC, BPC and RS need inputs that do not exist: skipped.
    assert {"generations", "verdicts", "predicted_classes"}.isdisjoint(inputs)
    metrics = registered_metrics(inputs)
    assert list(metrics) == ["jsd"]
    assert metrics["jsd"].value == pytest.approx(0.0, abs=1e-7) and metrics["jsd"].n == 2


def test_a_metric_asking_for_an_unknown_input_or_returning_junk_fails():
    inputs = metric_inputs([], seed=0)
    METRICS.register("typo_metric", lambda predicitons: None)
    try:
        with pytest.raises(TypeError, match='"predicitons" is no evaluation input'):
            registered_metrics(inputs)
    finally:
        METRICS.unregister("typo_metric")
    METRICS.register("junk_metric", lambda predictions: 0.5)
    try:
        with pytest.raises(TypeError, match='"junk_metric" returned float'):
            registered_metrics(inputs)
    finally:
        METRICS.unregister("junk_metric")
    METRICS.register("silent_metric", lambda predictions: None)
    try:
        assert "silent_metric" not in registered_metrics(inputs)
    finally:
        METRICS.unregister("silent_metric")
    assert isinstance(registered_metrics(inputs)["jsd"], MetricResult)


def test_data_build_runs_a_plugin_builder(installed_plugin, tmp_path):
    out = tmp_path / "built"
    result = CliRunner().invoke(app, ["data", "build", "plugin-toy", "--set", "questions=3",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 12 records (train 12)" in result.output
    records = read_examples(out / "train.jsonl")
    assert len(records) == 12 and len({r.prompt for r in records}) == 3


def test_data_build_names_the_known_builders_for_an_unknown_one(tmp_path):
    result = CliRunner().invoke(app, ["data", "build", "mmoqaa", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert 'unknown data builder "mmoqaa". Did you mean "mmoqa"?' in result.output
