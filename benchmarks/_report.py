"""Write one benchmark's table into its own section of BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEach section is written by the script it names; rerun it to refresh.\n"


def cpu_model() -> str:
    """The CPU's model name and whether it has native bf16: timings differ several-fold
    between the machines this project runs on (an AVX512-BF16 Xeon, an AVX2-only EPYC)."""
    from pluralign.train.recipe import bf16_is_fast

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle
                         if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {'native' if bf16_is_fast() else 'no native'} bf16"


def machine_line() -> str:
    import torch

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_section(name: str, body: str) -> Path:
    """Replace the section between ``<!-- name -->`` markers (or append it)."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    BENCHMARKS_MD.write_text(text)
    return BENCHMARKS_MD


def run_stamp(quick: bool) -> str:
    """The sentence that ends a section's description: machine, date, --quick."""
    return (f"Machine: {machine_line()}. Run on {time.strftime('%Y-%m-%d')}"
            f"{' (--quick)' if quick else ''}.")


def publish(name: str, body: str, *, write: bool) -> None:
    """Print ``body`` and, when ``write``, put it in its section of BENCHMARKS.md."""
    print(body)
    if write:
        write_section(name, body)
