"""pluralign as a client of itself: ``pluralign serve`` started with one command in a
process of its own, and a data builder pointed at it with ``--llm.backend openai``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app

KEY_ENV = "PLURALIGN_TEST_SERVE_KEY"
KEY = "sk-builder-test-52d1"
NAME = "tiny-gdpo"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _health(base: str) -> dict | None:
    request = urllib.request.Request(f"{base}/health",
                                     headers={"Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.fixture(scope="module")
def serve_process(tmp_path_factory) -> Iterator[str]:
    """``pluralign serve tiny`` on a free localhost port, the key in its environment."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PLURALIGN_API_KEY": KEY, "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pluralign", "serve", "tiny", "--beliefs",
               "1:Oppose,2:Neutral,3:Support", "--port", str(port), "--served_model_name",
               NAME, "--device", "cpu"]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while _health(base) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pluralign serve did not start:\n{log.read_text()}")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        process.wait(30)
    assert KEY not in log.read_text()


@pytest.mark.slow  # a server process of its own: about 15 s
def test_a_builder_writes_its_data_through_pluralign_serve(serve_process, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    rows = [{"question": "How much do you trust the news?", "options": ["A lot", "A little",
             "Not at all"], "distribution": [0.5, 0.3, 0.2], "group": "Japan"},
            {"question": "Is climate change a threat?", "options": ["Major threat",
             "Minor threat", "Not a threat"], "distribution": [0.4, 0.4, 0.2], "group": "Japan"}]
    source = tmp_path / "source.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    before = _health(serve_process)["requests"]
    result = CliRunner().invoke(app, [
        "data", "opinions", "--source", str(source), "--writer", "framed", "--n_styles", "2",
        "--pairs_per_question", "2", "--split_by", "example", "--max_tokens", "16",
        "--temperature", "1.0",
        "--llm.backend", "openai", "--llm.model", NAME, "--llm.base_url",
        f"{serve_process}/v1", "--llm.api_key_env", KEY_ENV, "--llm.max_retries", "0",
        "--llm.progress", "false", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "build_report.json").read_text(encoding="utf-8"))
    served = _health(serve_process)["requests"] - before
    # One request per (question, belief class), every one answered by the server (the
    # default option map folds "Minor threat" and "Not a threat" into one class: 3 + 2).
    assert report["counts"]["response requests"] == served == 5
    assert report["counts"]["response llm failures"] == 0
    assert report["counts"]["questions kept"] == 2
    records = [json.loads(line) for split in ("train", "eval", "test")
               for line in Path(tmp_path / "out" / f"{split}.jsonl").read_text().splitlines()]
    assert records and all(r["chosen_response"] for r in records)
