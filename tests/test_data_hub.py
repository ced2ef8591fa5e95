"""Hub-ready build folders: the card's YAML block, `datasets.load_dataset(folder)` reading
train / validation / test, and a one-line error when a Hub source cannot be reached."""

from __future__ import annotations

from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
import requests
import yaml
from typer.testing import CliRunner

from pluralign.cli.data import data_app
from pluralign.data.builders import BuildReport, BuildResult, load_opinion_rows, save_build
from pluralign.data.builders.cards import card_metadata, size_category
from pluralign.data.builders.hub import HubUnavailableError, load_hub_dataset
from pluralign.data.builders.opinions import HUB_ID
from pluralign.data.demo import DemoConfig, build_demo

#: An id no cache holds: loading it must fail without the network.
UNCACHED = "pluralign-test/never-cached-dataset"


def _front_matter(card: Path) -> dict:
    """The card's YAML metadata block, parsed."""
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    block, _, rest = text[4:].partition("\n---\n")
    assert rest.lstrip().startswith("# ")  # the prose card follows the block
    return yaml.safe_load(block)


@pytest.fixture
def demo_build(tmp_path) -> tuple[BuildResult, Path]:
    # Uneven eval/test sizes, so a swapped or merged split shows in the row counts.
    result = build_demo(DemoConfig(groups=["Northvale"], pairs_per_question=1,
                                   fractions=(0.6, 0.3, 0.1)))
    folder = tmp_path / "demo"
    save_build(result, folder, title="demo: test build", description="d")
    return result, folder


def test_load_dataset_reads_train_validation_test(demo_build, tmp_path):
    result, folder = demo_build
    assert (folder / "eval.jsonl").is_file()  # the file keeps pluralign's name
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == ["test", "train", "validation"]
    for hub_name, ours in (("train", "train"), ("validation", "eval"), ("test", "test")):
        assert loaded[hub_name].num_rows == len(result.splits[ours]) > 0
        assert loaded[hub_name]["prompt"] == [e.prompt for e in result.splits[ours]]


def test_card_yaml_block_parses_and_names_the_splits(demo_build):
    _, folder = demo_build
    meta = _front_matter(folder / "README.md")
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "train.jsonl"},
        {"split": "validation", "path": "eval.jsonl"},
        {"split": "test", "path": "test.jsonl"}]}]
    assert meta["pretty_name"] == "demo: test build"  # quoted by the dump, read back intact
    assert meta["license"] == "apache-2.0"  # the demo set is pluralign's own text
    assert meta["language"] == ["en"] and meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    assert {"pluralistic-alignment", "demo"} <= set(meta["tags"])
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "`eval.jsonl` as `validation`" in card and "## Splits" in card


def test_empty_split_is_not_listed_and_unknown_source_gets_no_license(demo_build, tmp_path):
    result, _ = demo_build
    splits = {"train": result.splits["train"], "eval": [], "test": result.splits["test"]}
    custom = BuildResult(splits, BuildReport("my-plugin", "my_rows.jsonl", 0))
    folder = tmp_path / "custom"
    save_build(custom, folder, title="t", description="d")
    meta = _front_matter(folder / "README.md")
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == ["train", "test"]
    assert "license" not in meta and "language" not in meta  # nothing is guessed
    assert "No license is set" in (folder / "README.md").read_text(encoding="utf-8")
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == ["test", "train"]


def test_license_of_globalopinionqa_and_size_buckets():
    meta = card_metadata(BuildReport("opinions", HUB_ID, 0), {"train": []}, "t")
    assert meta["license"] == "cc-by-nc-sa-4.0" and "configs" not in meta  # no rows: none
    assert [size_category(n) for n in (0, 999, 1_000, 12_345, 10**7)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "n>10M"]


# ------------------------------------------------------------------ offline Hub


@pytest.fixture
def offline(monkeypatch):
    """Offline mode for both clients (conftest sets HF_HUB_OFFLINE=1 already: this makes
    the test independent of import order), so no request is attempted."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_offline_uncached_id_is_one_line_naming_it(offline):
    with pytest.raises(HubUnavailableError) as caught:
        load_opinion_rows(UNCACHED)
    message = str(caught.value)
    assert "\n" not in message and f"'{UNCACHED}'" in message
    assert "HF_HUB_OFFLINE" in message and "--source" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("args", [["opinions", "--source", UNCACHED, "-g", "Japan"],
                                  ["mmoqa", UNCACHED]])
def test_cli_offline_hub_source_prints_one_error_line(offline, args, tmp_path):
    result = CliRunner().invoke(data_app, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load dataset '{UNCACHED}'")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("error", [
    ConnectionError(f"Couldn't reach '{UNCACHED}' on the Hub (LocalEntryNotFoundError)"),
    TimeoutError("timed out"),
    requests.ConnectionError("Max retries exceeded\nwith url: /api/datasets"),  # 2 lines
])
def test_network_errors_become_one_line_online_too(monkeypatch, error):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(HubUnavailableError) as caught:
        load_hub_dataset(UNCACHED, hint="pass a local file")
    message = str(caught.value)
    assert "\n" not in message and UNCACHED in message
    assert type(error).__name__ in message and "connect to the Hub" in message


def test_a_dataset_the_hub_lacks_keeps_its_own_error(monkeypatch):
    def missing(*args, **kwargs):
        raise datasets.exceptions.DatasetNotFoundError(f"Dataset '{UNCACHED}' doesn't exist")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(datasets.exceptions.DatasetNotFoundError):
        load_hub_dataset(UNCACHED)
