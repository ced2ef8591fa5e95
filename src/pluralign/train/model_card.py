"""The model card of a run's ``final/``: base model, method, belief format, groups, usage.

TRL's card says "fine-tuned version of [None]" (it drops any base model that is a
local folder, which pluralign's keywords are) and shows a chat-pipeline example
that ignores the belief-first format. pluralign replaces its body with this card
and keeps the YAML front matter the Hub reads (``base_model``, ``library_name``,
``tags``).

:func:`model_card` is pure (a :class:`ModelCardInfo` in, markdown out);
:func:`card_info` gathers the information from a run and :func:`write_model_card`
rewrites the file TRL wrote.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pluralign import __version__
from pluralign.beliefs.formats import SequenceFormat
from pluralign.data.records import Belief, GroupPreferenceExample

if TYPE_CHECKING:
    from pluralign.train.config import TrainConfig
    from pluralign.train.methods import Method

#: Hub ids of the model keywords that stand for a published model (the bundled GGUF is a
#: quantised SmolLM2-135M-Instruct); other keywords (``tiny``) have none.
KEYWORD_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
#: What a Hub id looks like: ``owner/name``.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Groups listed by name before the card only counts the rest.
_MAX_GROUPS = 12
#: TRL's template writes this placeholder (misspelt key, no real licence): not kept.
_TRL_PLACEHOLDER = ("licence", "license")

#: The command the card's snippets call (the project's console script).
CLI = "pluralign"


@dataclass(frozen=True)
class ModelCardInfo:
    """What the card says about a run; every field is plain data."""

    run_name: str
    #: ``config.model.model`` as the run was given it: a keyword, a folder or a Hub id.
    base_model: str
    #: The Hub id of the base model, for the front matter (None: not on the Hub).
    base_model_hub_id: str | None
    method: str
    method_summary: str
    #: The resolved sequence format name (``separated``, ``marker-options``, ...).
    format_name: str
    fmt: SequenceFormat
    groups: tuple[str, ...]
    train_records: int
    steps: int
    #: The step whose weights final/ holds when a validation split selected them.
    selected_step: int | None
    lora_r: int
    #: Where the trained model lies, as the snippet loads it.
    model_path: str
    #: A question and its belief set from the training data, for the usage snippet.
    example_prompt: str
    example_beliefs: tuple[Belief, ...]
    in_context: bool = False
    #: The example's group, which a group-conditioned model's prompt names.
    example_group: str = ""
    version: str = __version__


def hub_base_model(ref: str, *, is_local: bool, local_card: str | None = None) -> str | None:
    """The Hub id ``ref`` stands for: a keyword's published model, ``ref`` itself when it is
    an ``owner/name`` id and no local folder, else the ``base_model`` that a local folder's
    own card names (a run trained from ``runs/sft/final`` keeps SFT's lineage)."""
    if ref in KEYWORD_HUB_IDS:
        return KEYWORD_HUB_IDS[ref]
    if is_local:
        return split_front_matter(local_card)[0].get("base_model") if local_card else None
    return ref if _HUB_ID.match(ref) else None


def card_info(config: TrainConfig, method: Method, fmt: SequenceFormat,
              records: Sequence[GroupPreferenceExample], *, final_dir: Path, steps: int,
              selected_step: int | None) -> ModelCardInfo:
    """Gather a run's card information: its config (sequence format resolved), method,
    format and training records, where final/ lies and the steps it trained."""
    ref = str(config.model.model)
    local = Path(ref)
    card = local / "README.md"
    hub_id = hub_base_model(ref, is_local=local.exists(),
                            local_card=card.read_text(encoding="utf-8") if card.is_file()
                            else None)
    example = records[0]  # a run trains on at least one record
    return ModelCardInfo(
        run_name=Path(config.output_dir).name, base_model=ref, base_model_hub_id=hub_id,
        method=method.name, method_summary=method.summary, format_name=config.sequence_format,
        fmt=fmt, groups=groups_of(records),
        train_records=len(records), steps=steps, selected_step=selected_step,
        lora_r=config.model.lora_r, model_path=str(final_dir),
        example_prompt=example.prompt, example_beliefs=tuple(example.beliefs),
        in_context=method.in_context, example_group=example.group)


# ----------------------------------------------------------------------- front matter


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """``(front matter, body)`` of a markdown card (``{}`` when it has none)."""
    match = re.match(r"\A---\n(.*?)\n---\n?", text, flags=re.DOTALL)
    if not match:
        return {}, text
    data = yaml.safe_load(match.group(1)) or {}
    return (data if isinstance(data, dict) else {}), text[match.end():]


def front_matter(info: ModelCardInfo, trl: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """TRL's front matter with pluralign's base model and tags added (its keys kept)."""
    data = {k: v for k, v in (trl or {}).items() if (k, v) != _TRL_PLACEHOLDER}
    if info.base_model_hub_id:
        data["base_model"] = info.base_model_hub_id
    data.setdefault("library_name", "transformers")
    tags = [str(t) for t in data.get("tags") or []]
    data["tags"] = list(dict.fromkeys([*tags, "pluralign", info.method, "belief-first"]))
    return data


# ----------------------------------------------------------------------- card body


def sequence_layout(fmt: SequenceFormat) -> str:
    """The text a training sequence is, with placeholders: ``<Q>{prompt}<A><|belief|>{class}
    <{description}>{response}<eos>`` in the default format."""
    prompt = ("{chat template: user turn = prompt, then the generation prompt}"
              if fmt.chat_template else fmt.prompt_template)
    if fmt.group_template is not None:  # the group line comes right before the question
        prompt = prompt.replace("{prompt}", fmt.group_template + "{prompt}")
    marker = "{class}" if fmt.marker == "digit" else "<|belief_{class}|>"
    parts = ["<bos>" if fmt.add_bos else "", prompt, fmt.separator or "", marker,
             fmt.marker_options_template or "", fmt.description_template or "",
             "{response}<eos>"]
    return "".join(parts)


def _format_notes(fmt: SequenceFormat, beliefs: Sequence[Belief]) -> list[str]:
    """What each placeholder of :func:`sequence_layout` stands for in this format."""
    marker = ("the class id in digits" if fmt.marker == "digit"
              else "a special token `<|belief_k|>` per class k")
    notes = [f"- `{{class}}`: the belief marker, {marker}: the belief is one class of the "
             "question's belief set, drawn from the model's distribution over the markers."]
    if fmt.separator:
        notes.append(f"- `{fmt.separator}`: a separator token added to the tokenizer (saved "
                     "with the model); it ends every prompt and occurs nowhere else.")
    if fmt.description_template is not None:
        notes.append("- `{description}`: the belief's description, written by the model.")
    else:
        notes.append("- no description: the response follows the marker directly.")
    if fmt.lists_options or fmt.marker_options_template:
        options = fmt.options_text(beliefs) if beliefs else "1 = ...; 2 = ..."
        notes.append(f"- `{{options}}`: the question's answer options, e.g. `{options}`; "
                     "given text, never generated (generation writes them in).")
    if fmt.group_template is not None:
        notes.append("- `{group}`: the group whose beliefs the model answers with (one model "
                     "for several groups); `--group` on the command line, `groups=` in Python.")
    if fmt.chat_template and fmt.system_prompt:
        notes.append(f"- system prompt: {fmt.system_prompt!r}")
    return notes


def _groups_text(groups: Sequence[str]) -> str:
    shown = ", ".join(f"`{g}`" for g in groups[:_MAX_GROUPS])
    more = len(groups) - _MAX_GROUPS
    return shown + (f" and {more} more" if more > 0 else "") if groups else "(none named)"


def _base_text(info: ModelCardInfo) -> str:
    text = f"`{info.base_model}`"
    if info.base_model_hub_id and info.base_model_hub_id != info.base_model:
        hub = info.base_model_hub_id
        text += f" ([{hub}](https://huggingface.co/{hub}))"
    return text


def _summary_table(info: ModelCardInfo) -> list[str]:
    steps = f"{info.steps}"
    if info.selected_step is not None:
        steps += f" (final/ holds step {info.selected_step}'s weights, the best on validation)"
    weights = (f"LoRA adapter (r={info.lora_r}); `pluralign.load_model` loads its base model "
               "too" if info.lora_r else "full weights")
    plural = "s" if len(info.groups) != 1 else ""
    return ["| | |", "|---|---|",
            f"| base model | {_base_text(info)} |",
            f"| method | `{info.method}`: {info.method_summary} |",
            f"| target group{plural} | {_groups_text(info.groups)} |",
            f"| sequence format | `{info.format_name}` |",
            f"| training records | {info.train_records} |",
            f"| steps | {steps} |",
            f"| weights | {weights} |",
            f"| trained with | pluralign {info.version} on TRL |"]


def usage_snippets(info: ModelCardInfo) -> tuple[str, str]:
    """``(shell, python)``: belief-first generation of the card's model, by the command line
    and by the Python API; both read the model's format file, so they prompt as it trained."""
    # --beliefs splits on commas: a description's own commas would split it.
    beliefs_arg = ",".join(f"{b.class_id}:{b.description.replace(',', ';')}"
                           for b in info.example_beliefs)
    model, prompt = shlex.quote(info.model_path), shlex.quote(info.example_prompt)
    # A group-conditioned model's prompt names a group: the snippets name the example's.
    grouped = info.fmt.group_template is not None
    group_arg = f" --group {shlex.quote(info.example_group)}" if grouped else ""
    shell = "\n".join([
        f"pluralign generate --model {model}{group_arg} \\\n"
        f"    --beliefs {shlex.quote(beliefs_arg)} {prompt}",
        "# 20 samples: the histogram of drawn beliefs beside the model's distribution",
        f"pluralign generate --model {model} --n 20{group_arg} \\\n"
        f"    --beliefs {shlex.quote(beliefs_arg)} {prompt}",
    ])
    beliefs = "".join(f"    Belief({b.class_id}, {b.description!r}),\n"
                      for b in info.example_beliefs)
    python = "\n".join([
        "from pluralign import (SamplingOptions, generate_beliefs_first, load_model,",
        "                       load_sequence_format)",
        "from pluralign.data.records import Belief",
        "",
        f"model_dir = {info.model_path!r}",
        "model, tokenizer = load_model(model_dir)",
        "fmt = load_sequence_format(model_dir)  # the format it trained with",
        f"beliefs = [\n{beliefs}]",
        f"question = {info.example_prompt!r}",
        *([f"group = {info.example_group!r}"] if grouped else []),
        "[[generation]] = generate_beliefs_first(",
        "    model, tokenizer, [question], [beliefs], fmt=fmt,"
        + (" groups=[group]," if grouped else ""),
        "    options=SamplingOptions(temperature=0))  # 0: greedy belief and text",
        'print("belief:", generation.class_id, generation.description)',
        'print("response:", generation.response)',
    ])
    return shell, python


def model_card(info: ModelCardInfo, trl_front_matter: Mapping[str, Any] | None = None) -> str:
    """The markdown card of a run's ``final/`` (front matter included)."""
    shell, python = usage_snippets(info)
    meta = yaml.safe_dump(front_matter(info, trl_front_matter), sort_keys=False,
                          allow_unicode=True)
    lines = [
        "---", meta.rstrip("\n"), "---", "",
        f"# {info.run_name}: a belief-first model trained with pluralign", "",
        f"This model is {_base_text(info)} fine-tuned with `{info.method}` by pluralign. "
        "It answers **belief first**: after the prompt it writes a belief marker (the class "
        "id of one of the question's beliefs), then the belief's description, then a "
        "response that expresses that belief. Prompt it in the format below "
        "(pluralign reads it from `pluralign_format.json` in this folder); a plain "
        "text-generation pipeline does not.", "",
        *_summary_table(info), "",
        "## Sequence format", "",
        f"`{info.format_name}`, as a training sequence lays it out:", "",
        "```text", sequence_layout(info.fmt), "```", "",
        *_format_notes(info.fmt, info.example_beliefs), "",
        "## Generate belief then response", "",
        "With the `pluralign` command (a question and its belief set from the training data):",
        "", "```bash", shell, "```", "",
        "With the Python API:", "", "```python", python, "```", "",
    ]
    if info.in_context:
        lines += ["This model was trained with in-context shots before each question: "
                  f"`{CLI} generate` and `{CLI} eval` draw them as training did; "
                  "through the Python API pass them as `contexts=` (drawn from the "
                  f"training file as `{CLI} eval` draws them).", ""]
    lines += ["Evaluate it against its group's distribution (JSD, CBC, BPC, RS) with "
              f"`{CLI} eval -m {shlex.quote(info.model_path)} -d TEST.jsonl`.", ""]
    return "\n".join(lines)


def write_model_card(path: Path, info: ModelCardInfo) -> None:
    """Write the card to ``path``, keeping the front matter of the card there (TRL's)."""
    trl = split_front_matter(path.read_text(encoding="utf-8"))[0] if path.is_file() else {}
    path.write_text(model_card(info, trl), encoding="utf-8")


def groups_of(records: Iterable[GroupPreferenceExample]) -> tuple[str, ...]:
    """The sorted distinct ``group`` names of ``records``."""
    return tuple(sorted({r.group for r in records}))
