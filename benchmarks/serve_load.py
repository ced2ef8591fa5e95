"""``pluralign serve`` under a bounded concurrent load, from the real openai client.

The server runs as ``pluralign serve MODEL`` in a process of its own on 127.0.0.1
(with an API key, as a deployment would), and this script is its only client:

- throughput and latency: for 1, 4 and 16 concurrent clients (``--clients``), each a
  thread with its own ``openai.OpenAI`` client sending requests one after another,
  ``--requests`` requests per level (one question, ``--max-tokens`` tokens, after two
  warm-up requests); requests/s over the level's wall time, p50/p95 latency, and the
  server process's peak resident memory (RSS, sampled every 10 ms with psutil);
- beliefs: ``--jsd-answers`` answers (requests of n=16, max_tokens 1, 16 clients) and the
  Jensen-Shannon distance (natural log) between the share of each served belief and the
  distribution the server reports; the sampling-noise level is the same distance for
  the same number of draws from that distribution itself (median and 95th percentile
  of 2,000 simulated draws), so a served JSD at or below the 95th percentile is noise.

The issue's bar: 16 concurrent clients get at least 3x the requests/s of one.

Usage: .venv/bin/python benchmarks/serve_load.py [--model smollm2-135m] [--write]
       .venv/bin/python benchmarks/serve_load.py --model tiny --requests 4 --jsd-answers 32
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from _report import publish, run_stamp
from _timing import MB, RssSampler

QUESTION = "Should cities ban cars from their centres?"
BELIEFS = "1:Oppose,2:Neutral,3:Support"
SECTION = "serve-load"
HEADER = ("| concurrent clients | requests | requests/s | vs 1 client | p50 latency | "
          "p95 latency | server peak RSS (MB) |\n|---|---|---|---|---|---|---|")


class ServerRss(RssSampler):
    """Peak RSS of the server process (not of this client)."""

    def __init__(self, pid: int) -> None:
        import psutil

        super().__init__(interval=0.01)
        self._process = psutil.Process(pid)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_process(args: argparse.Namespace, key: str) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of ``pluralign serve`` started for the benchmark."""
    port = _free_port()
    command = [sys.executable, "-m", "pluralign", "serve", args.model, "--beliefs", BELIEFS,
               "--port", str(port), "--max_batch_rows", str(args.max_batch_rows),
               "--log_level", "warning", "--served_model_name", "bench"]
    process = subprocess.Popen(command, env={**os.environ, "PLURALIGN_API_KEY": key})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not _healthy(base, key):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"pluralign serve did not start: {' '.join(command)}")
            time.sleep(0.5)
        yield f"{base}/v1", process.pid
    finally:
        process.terminate()
        process.wait(60)


def _healthy(base: str, key: str) -> bool:
    request = urllib.request.Request(f"{base}/health", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _client(url: str, key: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)


def _ask(client: Any, **params: Any) -> Any:
    return client.chat.completions.create(
        model="bench", messages=[{"role": "user", "content": QUESTION}], **params)


def load_level(url: str, key: str, pid: int, clients: int, args: argparse.Namespace
               ) -> dict[str, Any]:
    """``args.requests`` requests from ``clients`` concurrent clients: rate, latency, RSS."""
    shares = [args.requests // clients + (i < args.requests % clients) for i in range(clients)]
    latencies: list[float] = []
    lock = threading.Lock()

    def client_loop(count: int) -> None:
        client = _client(url, key)
        for _ in range(count):
            started = time.perf_counter()
            _ask(client, max_tokens=args.max_tokens, temperature=args.temperature)
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in shares if n]
    with ServerRss(pid) as rss:
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=20, method="inclusive")
    return {"clients": clients, "requests": len(latencies), "rps": len(latencies) / wall,
            "p50": statistics.median(latencies), "p95": cuts[18], "peak_mb": rss.peak / MB}


def belief_check(url: str, key: str, answers: int) -> dict[str, Any]:
    """Served beliefs over ``answers`` answers vs the distribution the server reports."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from pluralign.beliefs.distances import jsd_per_prompt

    sizes = [16] * (answers // 16) + ([answers % 16] if answers % 16 else [])
    client = _client(url, key)
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda n: _ask(client, n=n, max_tokens=1), sizes))
    counts = Counter(c.belief["class_id"] for r in replies for c in r.choices)
    reported = [b["probability"] for b in replies[0].belief_distribution]
    ids = [b["class_id"] for b in replies[0].belief_distribution]
    served = np.array([counts[i] for i in ids], dtype=float) / answers
    jsd = float(jsd_per_prompt([served], [reported])[0])
    draws = np.random.default_rng(0).multinomial(answers, reported, size=2000) / answers
    noise = jsd_per_prompt(draws, [reported] * len(draws))
    return {"answers": answers, "reported": reported, "served": served.tolist(), "jsd": jsd,
            "noise_median": float(np.median(noise)),
            "noise_p95": float(np.percentile(noise, 95))}


def section(args: argparse.Namespace, levels: list[dict[str, Any]],
            beliefs: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {r['clients']} | {r['requests']} | {r['rps']:.2f} | "
        f"{r['rps'] / levels[0]['rps']:.2f}x | {r['p50']:.2f} | {r['p95']:.2f} | "
        f"{r['peak_mb']:.0f} |" for r in levels)
    speedup = levels[-1]["rps"] / levels[0]["rps"]
    verdict = "met" if speedup >= 3 else "NOT met"
    noise = ("at sampling-noise level" if beliefs["jsd"] <= beliefs["noise_p95"]
             else "ABOVE sampling-noise level")
    fmt = ", ".join(f"{p:.3f}" for p in beliefs["reported"])
    got = ", ".join(f"{p:.3f}" for p in beliefs["served"])
    return f"""## Serving under concurrent load (`benchmarks/serve_load.py`)

`pluralign serve {args.model}` in its own process on 127.0.0.1 (API key on, batches of at
most {args.max_batch_rows} answers), called by the openai client from threads of this
script: one question, belief set `{BELIEFS}`, max_tokens {args.max_tokens}, text temperature
{args.temperature:g}, {args.requests}
requests per level after two warm-up requests. Requests/s over the level's wall time;
latency per request (seconds); peak RSS of the server process. {run_stamp(False)}

{HEADER}
{rows}

{levels[-1]['clients']} clients reach {speedup:.2f}x the requests/s of one (bar: 3x, {verdict}).

Beliefs of {beliefs['answers']} served answers (n=16 requests, max_tokens 1): shares
{got} against the reported distribution {fmt}; Jensen-Shannon distance
{beliefs['jsd']:.4f}, {noise} (the same number of draws from the reported distribution
itself: median {beliefs['noise_median']:.4f}, 95th percentile {beliefs['noise_p95']:.4f})."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="What pluralign serve loads.")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=48, help="Requests per level.")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="Of the response text (0: greedy); beliefs are always drawn.")
    parser.add_argument("--max-batch-rows", type=int, default=16)
    parser.add_argument("--jsd-answers", type=int, default=1000)
    parser.add_argument("--write", action="store_true", help="Replace the BENCHMARKS.md section.")
    args = parser.parse_args()
    key = secrets.token_urlsafe(16)
    with serve_process(args, key) as (url, pid):
        for _ in range(2):  # warm-up: first-call allocations and kernel choices
            _ask(_client(url, key), max_tokens=args.max_tokens)
        levels = [load_level(url, key, pid, c, args) for c in sorted(args.clients)]
        beliefs = belief_check(url, key, args.jsd_answers)
    publish(SECTION, section(args, levels, beliefs), write=args.write)


if __name__ == "__main__":
    main()
