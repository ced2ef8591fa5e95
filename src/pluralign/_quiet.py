"""Keep library chatter that means nothing to a user off the terminal.

The CLI calls :func:`quiet_libraries` unless ``--verbose`` is given; the
Python API leaves logging alone (callers configure it themselves).
"""

from __future__ import annotations

import logging
import os
import warnings

# Messages that libraries print on every run but that ask nothing of the user.
_NOISE = [
    r".*TRANSFORMERS_CACHE.*",
    r".*Failed to initialize NumPy.*",
    r".*`torch_dtype` is deprecated.*",
    r".*past_key_values.*",
    r".*generation flags are not valid.*",
    r".*resume_download.*",
    r".*You are using a model of type.*",
    r".*copying from a non-meta parameter.*",
]


def set_offline_defaults() -> None:
    """No telemetry, no tokenizer fork warnings; offline unless the user says otherwise."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def quiet_libraries(verbose: bool = False) -> None:
    set_offline_defaults()
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pluralign").setLevel(level)
    if verbose:
        return
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=FutureWarning)
    # Library advice aimed at their own developers (adapter bookkeeping, pin_memory on CPU...).
    for module in ("peft", "transformers", "trl", "accelerate", "torch", "datasets"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    for name in ("transformers", "datasets", "accelerate", "peft", "trl", "httpx", "filelock",
                 "sentence_transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        import datasets

        # "Saving the dataset", "Truncating", "Map": bookkeeping bars of a few milliseconds.
        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
