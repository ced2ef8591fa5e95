"""evaluate(config): files, metric values recomputed from predictions.jsonl, report and curves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pluralign.beliefs.distances import jsd_per_prompt
from pluralign.data.records import write_examples
from pluralign.data.toy import conflicting_opinions
from pluralign.eval.evaluate import EvalConfig, evaluate, group_prompts, model_label, run_dir_of


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory, tiny_lm):
    """A fake finished run (tiny model in final/, metrics.jsonl) and a record file."""
    root = tmp_path_factory.mktemp("eval")
    model, tokenizer = tiny_lm
    final = root / "runs" / "gdpo" / "final"
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    (final / "pluralign_format.json").write_text(json.dumps(
        {"method": "gdpo", "belief_format": "digit", "use_chat_template": False}))
    curves = [{"step": s, "eval_belief/jsd": 0.4 - 0.05 * s,
               "eval_rewards/margins_majority": 0.1 * s,
               "eval_rewards/margins_minority": 0.05 * s} for s in range(1, 5)]
    (final.parent / "metrics.jsonl").write_text("\n".join(json.dumps(c) for c in curves) + "\n")
    data = root / "test.jsonl"
    write_examples(data, conflicting_opinions(3, 4, seed=5))
    return root, final, data


@pytest.fixture(scope="module")
def result(run_and_data):
    root, final, data = run_and_data
    config = EvalConfig(models=[str(final), "tiny"], data=str(data), output_dir=str(root / "out"),
                        n_samples=3, belief_samples=20, max_new_tokens=6, device="cpu",
                        ref_model="tiny", progress=False)
    return evaluate(config)


def test_evaluate_writes_every_output(result):
    out = result.out_dir
    for name in ("eval.json", "predictions.jsonl", "report.md", "report.html"):
        assert (out / name).is_file()
    summary = json.loads((out / "eval.json").read_text())
    assert list(summary["models"]) == ["gdpo", "tiny"]
    gdpo = summary["models"]["gdpo"]
    assert gdpo["method"] == "gdpo"
    for name in ("jsd", "jsd_sampled", "cbc", "bpc", "rs"):
        metric = gdpo["metrics"][name]
        assert {"value", "n", "ci_low", "ci_high", "counts"} <= set(metric)
    assert gdpo["judge_failures"] == {"parse_failure": gdpo["metrics"]["bpc"]["counts"][
        "parse_failure"], "api_error": 0}
    assert set(summary["reference_lines"]) == {"majority", "reverse", "uniform", "noise_0.1",
                                               "noise_0.05"}
    assert gdpo["margins"]["majority"]["n"] + gdpo["margins"]["minority"]["n"] == 12


def test_metric_values_equal_a_recomputation_from_predictions(result):
    out = result.out_dir
    summary = json.loads((out / "eval.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3
    for label in ("gdpo", "tiny"):
        mine = [r for r in rows if r["model"] == label]
        metrics = summary["models"][label]["metrics"]
        per_prompt = jsd_per_prompt([r["predicted"] for r in mine], [r["target"] for r in mine])
        assert metrics["jsd"]["value"] == pytest.approx(per_prompt.mean())
        assert [r["jsd"] for r in mine] == pytest.approx(per_prompt.tolist())
        # Prompts whose samples held no belief marker have no sampled distribution.
        read = [r for r in mine if r["sampled"] is not None]
        assert metrics["jsd_sampled"]["n"] == len(read)
        assert metrics["jsd_sampled"]["counts"]["prompts_without_belief_sample"] == sum(
            sum(r["sampled_counts"]) == 0 for r in mine)
        if read:
            sampled = jsd_per_prompt([r["sampled"] for r in read], [r["target"] for r in read])
            assert metrics["jsd_sampled"]["value"] == pytest.approx(sampled.mean())
        else:
            assert metrics["jsd_sampled"]["value"] is None
        gens = [g for r in mine for g in r["generations"]]
        assert len(gens) == 3 * 3
        agree = sum(g["class_id"] is not None and g["class_id"] == g["description_class"]
                    for g in gens)
        assert metrics["cbc"]["value"] == pytest.approx(agree / len(gens))
        verdicts = [g["verdict"] for g in gens]
        # Every generation counts, empty and unparsed responses as "empty" (not expressed).
        judged = verdicts.count("yes") + verdicts.count("no") + verdicts.count("empty")
        assert metrics["bpc"]["n"] == judged
        assert verdicts.count("empty") == sum(
            (not g["parsed"]) or not g["response"].strip() for g in gens)
        if judged:
            assert metrics["bpc"]["value"] == pytest.approx(verdicts.count("yes") / judged)
        sims = [g["rs"] for g in gens if g["rs"] is not None]
        # They score 0 where their belief has a reference response (None: nothing to compare).
        silent = [g for g in gens if (not g["parsed"]) or not g["response"].strip()]
        assert all(g["rs"] in (0.0, None) for g in silent)
        assert metrics["rs"]["counts"]["empty"] == len(silent)
        assert metrics["rs"]["n"] == len(sims)
        if sims:
            assert metrics["rs"]["value"] == pytest.approx(np.mean(sims))
        for r in mine:
            allowed = {b["class_id"] for b in r["beliefs"]}
            assert all(g["class_id"] in allowed for g in r["generations"])
            assert sum(r["sampled_counts"]) + r["off_belief"] == 20


def test_the_same_model_twice_gives_the_same_numbers(result):
    first, second = result.evaluations
    assert first.metrics["jsd"].value == pytest.approx(second.metrics["jsd"].value)


def test_report_has_tables_plots_and_training_curves(result):
    out = result.out_dir
    markdown = (out / "report.md").read_text()
    assert "| gdpo | gdpo |" in markdown and "| tiny |" in markdown
    assert "Reference lines" in markdown and "| majority |" in markdown
    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert {"jsd.png", "margins.png", "beliefs_0.png", "beliefs_1.png", "curves_0.png"} <= plots
    assert "curves_1.png" not in plots  # the keyword model belongs to no run
    for name in plots:
        assert f"plots/{name}" in markdown
        assert (out / "plots" / name).read_bytes().startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(plots)
    assert "<table>" in page


def test_labels_and_run_folders(run_and_data):
    _, final, _ = run_and_data
    assert model_label(str(final)) == "gdpo"
    assert model_label(str(final), ["gdpo"]) == "gdpo-2"
    assert model_label("tiny") == "tiny"
    assert run_dir_of(str(final)) == final.parent
    assert run_dir_of("tiny") is None


def test_group_prompts_collects_references_per_belief():
    records = conflicting_opinions(2, 6, seed=1)
    groups = group_prompts(records)
    assert len(groups) == 2
    for g in groups:
        mine = [r for r in records if r.prompt == g.prompt]
        for r in mine:
            assert r.chosen_response in g.references[r.chosen_belief]
            assert r.rejected_response in g.references[r.rejected_belief]


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="models"):
        evaluate(EvalConfig(data=str(tmp_path / "x.jsonl")))
    with pytest.raises(ValueError, match="n_samples"):
        EvalConfig(models=["tiny"], data="x", n_samples=-1)
    with pytest.raises(ValueError, match="response_temperature: must be >= 0"):
        EvalConfig(models=["tiny"], data="x", response_temperature=-1.0)


def test_text_after_the_drawn_belief_is_greedy_by_default():
    """The default decodes the description and response greedily while the belief is
    still drawn at temperature 1 (chosen on validation splits: benchmarks/decode_sweep.py);
    none gives the text the belief's temperature, as before."""
    default = EvalConfig(models=["tiny"], data="x").sampling()
    assert (default.temperature, default.text_temperature) == (1.0, 0.0)
    same = EvalConfig(models=["tiny"], data="x", temperature=0.8,
                      response_temperature=None).sampling()
    assert (same.temperature, same.text_temperature) == (0.8, 0.8)


def test_prompts_without_any_belief_sample_are_counted_not_filled_in():
    from pluralign.eval.evaluate import PromptPrediction, score_predictions

    groups = group_prompts(conflicting_opinions(3, 4, seed=2))
    predictions = [PromptPrediction(group=g, predicted=g.target if i else None,
                                    sampled=None if i == 2 else g.target,
                                    sampled_counts=[0] * len(g.target))
                   for i, g in enumerate(groups)]
    metrics = score_predictions(predictions)
    assert metrics["jsd"].n == 2 and metrics["jsd"].value == pytest.approx(0.0, abs=1e-7)
    assert metrics["jsd"].counts["prompts_without_belief_sample"] == 1
    assert np.isnan(metrics["jsd"].per_item[0]) and len(metrics["jsd"].per_item) == 3
    assert metrics["jsd_sampled"].n == 2
    assert metrics["jsd_sampled"].counts["prompts_without_belief_sample"] == 1
    assert predictions[0].to_dict("m")["jsd"] is None


def test_bf16_autocast_reads_the_same_beliefs(run_and_data, tmp_path):
    """`bf16` only changes the forwards' precision: belief readings stay within bf16 noise."""
    _, _, data = run_and_data
    readings = {}
    for bf16 in (False, True):
        config = EvalConfig(models=["tiny"], data=str(data),
                            output_dir=str(tmp_path / f"bf16-{bf16}"), n_samples=0,
                            belief_samples=0, device="cpu", bf16=bf16,
                            progress=False)
        assert EvalConfig.load(None, {"models": ["tiny"], "data": str(data),
                                      "bf16": bf16}).bf16 is bf16
        evaluate(config)
        rows = [json.loads(line) for line in (tmp_path / f"bf16-{bf16}" /
                                              "predictions.jsonl").open()]
        readings[bf16] = {row["prompt"]: row["predicted"] for row in rows}
    assert readings[True].keys() == readings[False].keys() and len(readings[True]) == 3
    for prompt, fp32 in readings[False].items():
        np.testing.assert_allclose(readings[True][prompt], fp32, atol=0.02)


def _tiny_run(tmp_path, method: str, sequence_format: str):
    """Two steps of ``method`` on the tiny model with ``sequence_format``; records, run."""
    from pluralign.models import ModelConfig
    from pluralign.train.api import train
    from pluralign.train.config import TrainConfig

    records = conflicting_opinions(2, 4, seed=3)
    write_examples(tmp_path / "train.jsonl", records)
    run = train(TrainConfig(method=method, train_file=str(tmp_path / "train.jsonl"),
                            output_dir=str(tmp_path / method), max_steps=2, save_steps=10_000,
                            sequence_format=sequence_format, seed=0,
                            model=ModelConfig(model="tiny", lora_r=0, device="cpu")),
                console_logs=False)
    return records, run


def test_a_run_trained_with_options_is_read_with_its_options(tmp_path):
    """Training saves the options format; evaluation rebuilds the prompts with the options."""
    from pluralign.beliefs.formats import SEPARATED_FORMAT
    from pluralign.beliefs.readout import belief_distributions
    from pluralign.beliefs.tokenize import belief_marker_ids, encode_prompt
    from pluralign.eval.generate import load_sequence_format
    from pluralign.models import load_model

    records, run = _tiny_run(tmp_path, "sft", "separated-options")
    fmt = load_sequence_format(run.final_dir)
    assert fmt.lists_options and fmt.separator == SEPARATED_FORMAT.separator
    evaluate(EvalConfig(models=[str(run.final_dir)], data=str(tmp_path / "train.jsonl"),
                        output_dir=str(tmp_path / "out"), n_samples=1, belief_samples=0,
                        max_new_tokens=4, device="cpu", progress=False))
    row = json.loads((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()[0])
    model, tokenizer = load_model(str(run.final_dir), device="cpu")
    group = group_prompts(records)[0]
    markers = [belief_marker_ids(tokenizer, list(group.class_ids))]
    with_options = encode_prompt(tokenizer, group.prompt, fmt, beliefs=group.beliefs)
    without = encode_prompt(tokenizer, group.prompt, SEPARATED_FORMAT)
    read = belief_distributions(model, [with_options], markers,
                                pad_token_id=tokenizer.pad_token_id).probs[0]
    unlisted = belief_distributions(model, [without], markers,
                                    pad_token_id=tokenizer.pad_token_id).probs[0]
    np.testing.assert_allclose(row["predicted"], read, atol=1e-5)
    assert np.abs(np.asarray(unlisted) - np.asarray(read)).max() > 1e-4


def test_a_marker_options_run_generates_after_the_given_options(tmp_path):
    """GDPO trains on the marker-options format, saves it, and generation writes the options
    in after the drawn marker: the continuation is the model's own after those tokens."""
    from pluralign.beliefs.tokenize import belief_marker_id, encode_prompt, marker_options_ids
    from pluralign.eval.generate import (
        SamplingOptions,
        decode_until_eos,
        generate_beliefs_first,
        load_sequence_format,
    )
    from pluralign.models import load_model

    records, run = _tiny_run(tmp_path, "gdpo", "marker-options")
    fmt = load_sequence_format(run.final_dir)
    assert fmt.marker_options_template == "(Options: {options})"
    model, tokenizer = load_model(str(run.final_dir), device="cpu")
    group = group_prompts(records)[0]
    gen = generate_beliefs_first(model, tokenizer, [group.prompt], [group.beliefs], fmt=fmt,
                                 options=SamplingOptions(temperature=0.0, max_new_tokens=5))[0][0]
    given = marker_options_ids(tokenizer, fmt, group.beliefs)
    ids = [*encode_prompt(tokenizer, group.prompt, fmt), belief_marker_id(tokenizer, gen.class_id),
           *given]
    out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=5, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
    assert gen.text == str(gen.class_id) + decode_until_eos(tokenizer, out)
    assert "(Options:" not in gen.text  # given, not part of what the model wrote
