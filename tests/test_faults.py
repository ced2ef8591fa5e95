"""Fault injection: each probe of issue 15 run against the product, with the outcome asserted.

A hostile but realistic user: folders that hold other files, runs that diverge,
records too long for ``max_length``, two runs in one folder, resumes with
changed settings, model folders that carry their own code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app

runner = CliRunner()


def _cli(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin)


# ------------------------------------------------------------- 6: a folder's own code


@pytest.fixture
def folder_with_code(tmp_path, tiny_lm) -> tuple[Path, Path]:
    """A saved tiny model whose config.json points auto_map at code that leaves a file."""
    model, tokenizer = tiny_lm
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    sentinel = tmp_path / "code-ran"
    (folder / "custom.py").write_text(
        f"from pathlib import Path\nPath({str(sentinel)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'pluralign-probe'\n"
        "class CustomModel(LlamaForCausalLM):\n    config_class = CustomConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "pluralign-probe"  # unknown to transformers: only the code knows it
    config["auto_map"] = {"AutoConfig": "custom.CustomConfig",
                          "AutoModelForCausalLM": "custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, sentinel


def test_a_local_folders_code_does_not_run_even_when_stdin_says_yes(folder_with_code):
    folder, sentinel = folder_with_code
    result = _cli("generate", "-m", str(folder), "--max-new-tokens", "2", "Cats?", stdin="y\ny\n")
    assert result.exit_code == 2, result.output  # the CLI's usage-error code
    assert "--trust-remote-code" in result.output and str(folder) in result.output
    assert "Traceback" not in result.output
    assert not sentinel.exists()


def test_trust_remote_code_is_an_explicit_opt_in(folder_with_code):
    from pluralign.models import ModelLoadError, load_model

    folder, sentinel = folder_with_code
    with pytest.raises(ModelLoadError, match="auto_map"):
        load_model(str(folder))
    assert not sentinel.exists()
    model, _ = load_model(str(folder), trust_remote_code=True)
    assert sentinel.read_text() == "ran"
    assert type(model).__name__ == "CustomModel"


# ------------------------------------------------------ 11: non-finite config values


@pytest.mark.parametrize("line", ["learning_rate: .nan", "learning_rate: .inf", "beta: .nan"])
def test_non_finite_yaml_values_are_refused_at_their_line(tmp_path, line):
    config = tmp_path / "run.yaml"
    config.write_text(f"method: gdpo\ntrain_file: train.jsonl\n{line}\n")
    result = _cli("train", str(config), "--output_dir", str(tmp_path / "out"))
    assert result.exit_code != 0
    field = line.split(":")[0]
    assert f"{config}:3 (field '{field}'): expected a finite number" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_non_finite_values_are_refused_from_python_and_the_command_line():
    from pluralign.train.config import TrainConfig

    with pytest.raises(ValueError, match="beta: must be a finite number, got nan"):
        TrainConfig(method="gdpo", beta=float("nan"))
    result = _cli("train", "--method", "gdpo", "--train_file", "x.jsonl", "--learning_rate", "inf")
    assert result.exit_code != 0 and "learning_rate" in result.output and "finite" in result.output


# ---------------------------------------------------------- 2: non-finite gradients


@pytest.fixture(scope="module")
def toy_train(tmp_path_factory) -> Path:
    from pluralign.data.records import write_examples
    from pluralign.data.toy import conflicting_opinions

    path = tmp_path_factory.mktemp("toy") / "train.jsonl"
    write_examples(path, conflicting_opinions(4, 4, seed=0))
    return path


def _train_cli(train_file: Path, out: Path, *extra: str):
    return _cli("train", "--method", "gdpo", "--train_file", str(train_file),
                "--output_dir", str(out), "--model.model", "tiny", "--model.device", "cpu",
                "--per_device_train_batch_size", "4", "--validation_fraction", "0", *extra)


def _all_finite(folder: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    files = list(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return all(bool(torch.isfinite(t).all()) for f in files for t in load_file(f).values())


def test_nan_gradients_with_a_finite_loss_stop_the_run_before_any_nan_save(toy_train, tmp_path):
    out = tmp_path / "run"
    # Full fine-tuning (lora_r 0): this run relied on `--model.model` resetting LoRA to 0,
    # the nested-override bug; an explicit rank keeps what it tests.
    result = _train_cli(toy_train, out, "--learning_rate", "1e8", "--max_steps", "3",
                        "--save_steps", "1", "--model.lora_r", "0")
    assert result.exit_code != 0
    assert "non-finite gradients at step 2" in result.output, result.output
    assert not (out / "final").exists()
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-1"]
    assert _all_finite(checkpoints[0])


# ------------------------------------- 1, 4, 7: the run folder, its lock, stale metrics


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_a_non_empty_folder_pluralign_did_not_create_is_refused_untouched(toy_train, tmp_path):
    out = tmp_path / "data" / "us"
    out.mkdir(parents=True)
    (out / "train.jsonl").write_text(toy_train.read_text())
    (out / "README.md").write_text("my dataset card\n")
    result = _train_cli(toy_train, out, "--max_steps", "1")
    assert result.exit_code != 0
    assert f"output_dir {out} is not empty" in result.output and "--overwrite" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "train.jsonl"]


def test_overwrite_writes_beside_the_users_files_and_never_over_them(toy_train, tmp_path):
    out = tmp_path / "mine"
    (out / "data").mkdir(parents=True)
    mine = {out / "data" / "train.jsonl": toy_train.read_text(), out / "README.md": "card\n",
            out / "notes.txt": "keep me\n"}
    for path, text in mine.items():
        path.write_text(text)
    result = _train_cli(toy_train, out, "--max_steps", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert all(path.read_text() == text for path, text in mine.items())
    assert (out / "final").is_dir() and (out / "data" / "train.jsonl").is_file()
    # A user file with a name a run writes is a refusal even under --overwrite.
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "metrics.jsonl").write_text("{}\n")
    result = _train_cli(toy_train, clash, "--max_steps", "1", "--overwrite")
    assert result.exit_code != 0 and "metrics.jsonl" in result.output
    assert (clash / "metrics.jsonl").read_text() == "{}\n"


def test_a_finished_run_needs_resume_or_overwrite_and_overwrite_starts_clean(toy_train, tmp_path):
    out = tmp_path / "run"
    assert _train_cli(toy_train, out, "--max_steps", "2", "--logging_steps", "1").exit_code == 0
    again = _train_cli(toy_train, out, "--max_steps", "1", "--logging_steps", "1")
    assert again.exit_code != 0 and "already holds a run" in again.output
    assert _steps(out) == [1, 2]
    over = _train_cli(toy_train, out, "--max_steps", "1", "--logging_steps", "1", "--overwrite")
    assert over.exit_code == 0, over.output
    assert _steps(out) == [1]
    assert not list(out.glob("checkpoint-2"))


def test_a_run_that_died_before_its_first_checkpoint_restarts_with_clean_metrics(
        toy_train, tmp_path, caplog):
    from pluralign.runs import prepare_run_dir
    from pluralign.train.config import TrainConfig

    out = tmp_path / "run"
    prepare_run_dir(out, TrainConfig(method="gdpo"))  # what a killed run leaves: its run files
    (out / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 0.7}) + "\n" for s in (1, 2, 3)))
    with caplog.at_level("WARNING", logger="pluralign"):
        result = _train_cli(toy_train, out, "--max_steps", "2", "--logging_steps", "1",
                            "--resume")
    assert result.exit_code == 0, result.output
    assert "holds no complete checkpoint; starting fresh" in caplog.text
    assert _steps(out) == [1, 2]


def test_a_second_run_into_a_folder_in_use_fails_at_once(toy_train, tmp_path):
    from pluralign.run_folder import lock_run_folder

    out = tmp_path / "run"
    held = lock_run_folder(out)  # another live run holds the folder
    try:
        result = _train_cli(toy_train, out, "--max_steps", "1")
    finally:
        held.release()
    assert result.exit_code != 0 and "is in use by another run (pid" in result.output
    assert not (out / "metrics.jsonl").exists() and not (out / "config.yaml").exists()
    assert _train_cli(toy_train, out, "--max_steps", "1").exit_code == 0


# ------------------------------------------------------ 5: resume with changed settings


def test_resume_refuses_a_changed_learning_rate_and_accepts_more_steps(toy_train, tmp_path):
    out = tmp_path / "run"
    assert _train_cli(toy_train, out, "--max_steps", "2", "--save_steps", "1").exit_code == 0
    changed = _train_cli(toy_train, out, "--max_steps", "3", "--learning_rate", "1e-5",
                         "--resume")
    assert changed.exit_code != 0
    assert "learning_rate: 5e-05 -> 1e-05" in changed.output, changed.output
    config = (out / "config.yaml").read_text()
    assert "learning_rate: 5.0e-05" in config or "learning_rate: 5e-05" in config
    longer = _train_cli(toy_train, out, "--max_steps", "3", "--save_steps", "1", "--resume")
    assert longer.exit_code == 0, longer.output
    assert "trained 3 steps" in longer.output


# ------------------------------------------------------------ 3: records too long


@pytest.fixture(scope="module")
def train_with_a_long_record(toy_train, tmp_path_factory) -> Path:
    """The toy records with line 3's prompt made longer than max_length 512."""
    lines = toy_train.read_text().splitlines()
    record = json.loads(lines[2])
    record["prompt"] = "Please consider this carefully. " * 120 + record["prompt"]
    lines[2] = json.dumps(record)
    path = tmp_path_factory.mktemp("long") / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_record_longer_than_max_length_is_an_error_naming_file_and_line(
        train_with_a_long_record, tmp_path):
    result = _train_cli(train_with_a_long_record, tmp_path / "run", "--max_steps", "1")
    assert result.exit_code != 0
    assert f"{train_with_a_long_record}:3: prompt + belief + response are" in result.output
    assert "max_length is 512" in result.output and "--too_long drop" in result.output
    assert not (tmp_path / "run" / "final").exists()


def test_too_long_drop_leaves_the_record_out_and_counts_it(train_with_a_long_record, tmp_path):
    out = tmp_path / "run"
    result = _train_cli(train_with_a_long_record, out, "--max_steps", "1", "--too_long", "drop")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "run.json").read_text())["too_long"][0]
    assert report["dropped"] == 1 and report["dropped_lines"] == [3]
    assert report["longest_tokens"] > 512


def test_a_non_finite_weight_is_named_before_any_save(fresh_tiny_lm):
    import torch

    from pluralign.train.common import TrainingDiverged, check_finite_tensors

    model, _ = fresh_tiny_lm
    check_finite_tensors(model, 3, gradients=False, before="writing final/")  # all finite
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"non-finite weights at step 3 "
                       r"\(model\.layers\.1\.mlp\.down_proj\.weight\), found before writing"):
        check_finite_tensors(model, 3, gradients=False, before="writing final/")


# ------------------------------------------------------------------ 13: odd files


def test_a_non_utf8_line_is_named_by_validate_and_by_training(toy_train, tmp_path):
    lines = toy_train.read_bytes().splitlines(keepends=True)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b"".join([lines[0], lines[1].replace(b"a", b"\xe9", 1), *lines[2:]]))
    result = _cli("data", "validate", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:2: not UTF-8 text (byte 0xe9" in result.output, result.output
    assert "Traceback" not in result.output
    train = _train_cli(bad, tmp_path / "run", "--max_steps", "1")
    assert train.exit_code != 0 and f"{bad}:2: not UTF-8 text" in train.output


def test_empty_files_are_refused_by_validate_and_eval(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result = _cli("data", "validate", str(empty))
    assert result.exit_code == 1 and f"{empty}: holds no records" in result.output
    result = _cli("eval", "-m", "tiny", "-d", str(empty), "-o", str(tmp_path / "eval"))
    assert result.exit_code != 0 and f"{empty}: holds no records" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------- 9, 13: the LLM behind `pluralign data`


def _opinions(shared_data: Path, out: Path, *extra: str):
    return _cli("data", "opinions", "--source",
                str(shared_data / "globalopinionqa" / "dev_groups.jsonl"), "-g", "Pakistan",
                "--max-questions", "1", "--writer", "framed", "--styles", "1",
                "--pairs-per-question", "2", "--out", str(out), *extra)


def test_a_misspelt_backend_and_a_missing_api_key_are_one_line_errors(
        shared_data, tmp_path, monkeypatch):
    result = _opinions(shared_data, tmp_path / "a", "--llm-backend", "opnai")
    assert result.exit_code == 2 and "backend: unknown 'opnai'" in result.output
    assert 'did you mean "openai"' in result.output.lower() and "Traceback" not in result.output
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = _opinions(shared_data, tmp_path / "b", "--llm-backend", "openai",
                       "--llm-model", "m", "--base-url", "http://127.0.0.1:9/v1")
    assert result.exit_code == 2 and "OPENAI_API_KEY, which is not set" in result.output
    assert "Traceback" not in result.output


def test_a_hanging_server_is_given_up_after_the_timeout_and_retries_asked_for(
        shared_data, tmp_path):
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # accepts connections (the kernel does) and never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    started = time.perf_counter()
    try:
        result = _opinions(shared_data, tmp_path / "pk", "--llm-backend", "openai",
                           "--llm-model", "m", "--base-url", url, "--api-key-env", "",
                           "--llm-timeout", "0.5", "--llm-retries", "0")
    finally:
        listener.close()
    assert time.perf_counter() - started < 60
    assert result.exit_code == 2 and "no records were built" in result.output
    assert "llm failures" in result.output


# ----------------------------------------------------- 8: GPA with every request failing


def test_gpa_names_total_llm_failure_and_exits_non_zero(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from gpa_fixtures import write_log

    work = tmp_path / "work"
    result = _cli("gpa", "run", str(write_log(tmp_path)), "-w", str(work), "--llm-backend",
                  "openai", "--llm-model", "stub", "--base-url", "http://127.0.0.1:9/v1",
                  "-s", "llm.api_key_env=", "-s", "llm.max_retries=0", "-s", "relevance=keywords",
                  "-s", "ft_model=tiny", "-s", "ft_lora_r=4", "-s", "ft_max_steps=1",
                  "-s", "ft_max_length=96", "-s", "answer_max_tokens=6",
                  "-s", "ft_pairs_per_group=3")
    assert result.exit_code == 2, result.output
    assert "every LLM request of" in result.output and "failed" in result.output
    pipeline = json.loads((work / "pipeline_report.json").read_text())
    failed = pipeline["llm_failures"]
    assert failed and all(f["failed"] == f["requests"] > 0 for f in failed.values())
    evaluation = (work / "evaluation.md").read_text()
    assert "## LLM failures" in evaluation and "LLM requests failed" in evaluation


# ----------------------------------- 12: validate refuses what training cannot use


def _edited(toy_train: Path, tmp_path: Path, edit) -> Path:
    record = json.loads(toy_train.read_text().splitlines()[0])
    edit(record)
    path = tmp_path / "edited.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize(("edit", "field", "reason"), [
    (lambda r: r.update(chosen_response="   "), "chosen_response", "not only whitespace"),
    (lambda r: r["beliefs"][0].update(description=""), "beliefs", "empty description"),
    (lambda r: r.update(rejected_response=r["chosen_response"]), "rejected_response",
     "same text as chosen_response"),
])
def test_validate_and_train_refuse_the_same_unusable_records(toy_train, tmp_path, edit, field,
                                                             reason):
    path = _edited(toy_train, tmp_path, edit)
    result = _cli("data", "validate", str(path))
    assert result.exit_code == 1 and f"{path}:1: field '{field}'" in result.output
    assert reason in result.output
    train = _train_cli(path, tmp_path / "run", "--max_steps", "1")
    assert train.exit_code != 0 and f"{path}:1: field '{field}'" in train.output


def test_a_class_id_the_digit_markers_cannot_write_names_the_cli_option(toy_train, tmp_path):
    def to_twelve(record):
        chosen = record["chosen_belief"]
        for belief in record["beliefs"]:
            if belief["class_id"] == chosen:
                belief["class_id"] = 12
        record["chosen_belief"] = 12

    path = _edited(toy_train, tmp_path, to_twelve)
    result = _cli("data", "validate", str(path))
    assert result.exit_code == 1 and "class id 12 has no single-digit marker" in result.output
    train = _train_cli(path, tmp_path / "run", "--max_steps", "1")
    assert train.exit_code != 0 and f"{path}:1: field 'beliefs'" in train.output
    assert "--belief_format special" in train.output


# ------------------------------------------ 13: config errors point at the right place


def test_a_nested_unknown_yaml_key_points_at_its_own_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("method: gdpo\nmodel:\n  model: tiny\n  lora_rr: 8\n")
    result = _cli("train", str(config), "--output_dir", str(tmp_path / "out"))
    assert result.exit_code != 0
    assert f"{config}:4" in result.output and "lora_rr" in result.output, result.output
    assert "did you mean" in result.output.lower()


def test_an_output_dir_that_is_a_file_is_one_clear_line(toy_train, tmp_path):
    target = tmp_path / "taken"
    target.write_text("user data\n")
    result = _train_cli(toy_train, target, "--max_steps", "1")
    assert result.exit_code != 0 and f"output_dir {target} is a file" in result.output
    assert "Traceback" not in result.output and target.read_text() == "user data\n"


# ----------------------------------------------- 10: opinion source rows, checked


def test_opinion_source_rows_name_bad_lines_and_count_rescaled_distributions(tmp_path):
    from pluralign.data.builders.cards import BuildReport
    from pluralign.data.builders.opinions import beliefs_of_row, load_opinion_rows

    rows = [
        {"question": "Q1?", "options": ["Yes", "No"], "distribution": [0.5, 0.2], "group": "G"},
        {"question": "Q2?", "options": ["Yes", "No"], "distribution": [1.2, -0.2], "group": "G"},
        {"question": "Q3?", "options": ["Yes", "No"], "distribution": [0.6, 0.4], "group": "G"},
    ]
    source = tmp_path / "source.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = BuildReport("opinions", str(source), 0)
    loaded = load_opinion_rows(str(source), report)
    assert [r.question for r in loaded] == ["Q1?", "Q3?"]
    assert report.skipped["bad input row"] == 1
    assert any(w.startswith(f"{source}:2: skipped") and "negative" in w for w in report.warnings)
    option_map = {"Yes": 1, "No": 2}
    _, probs, _ = beliefs_of_row(loaded[0], option_map, report)
    assert probs == pytest.approx([0.5 / 0.7, 0.2 / 0.7])
    beliefs_of_row(loaded[1], option_map, report)
    assert report.counts["distributions rescaled to sum to 1"] == 1
    with pytest.raises(ValueError, match=rf"{source}:2: distribution has a negative"):
        load_opinion_rows(str(source))


def test_an_output_path_that_is_a_file_is_one_line_for_every_command(tmp_path):
    import subprocess
    import sys

    taken = tmp_path / "taken"
    taken.write_text("user data\n")
    done = subprocess.run([sys.executable, "-m", "pluralign", "data", "demo", "-o", str(taken)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {taken}: File exists"], done.stderr
    assert taken.read_text() == "user data\n"
