"""The one command-line dialect: ``pluralign CMD [CONFIG.yaml] --field value``.

Every command that runs from a config dataclass reads its words the same way:

- an optional YAML file first (``-c FILE`` / ``--config FILE`` also work);
- then ``--field value``, ``--field=value``, a bare ``--flag`` for true, nested fields
  as ``--model.lora_r 8``; dashes and underscores alike (``--max-new-tokens``);
- an option repeated for a list field (``--models a --models b``);
- ``--set key=value`` / ``-s key=value``, the older spelling, is the same override;
- a few short letters per command (``-o`` for ``--output_dir``);
- a command with a natural operand (the review file, the logs, the question) takes it
  as a plain word too, anywhere but right after an option that awaits its value:
  ``pluralign data reviews reviews.jsonl -o data/movies``.

``--fields`` lists a command's fields with their defaults and help. Only typer
is imported here, so ``pluralign --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

#: click settings of a config command: its options are the config's fields, parsed here.
CONFIG_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}

#: The ``--fields`` option of every config command.
Fields = Annotated[bool, typer.Option(
    "--fields", help="List every field (each one is an option) with its default and help.")]

#: What every config command's help ends with.
DIALECT_HELP = (
    "Every field is an option: `--field value` (dashes or underscores; nested as "
    "`--llm.model NAME`); a YAML file of fields may come first. `--fields` lists them all.")

#: Keywords of ``app.command(...)`` for a config command: parsing, usage line, help footer.
CONFIG_COMMAND: dict[str, Any] = {
    "context_settings": CONFIG_CONTEXT, "epilog": DIALECT_HELP,
    "options_metavar": "[CONFIG.yaml] [--FIELD VALUE]..."}

_YAML_SUFFIXES = (".yaml", ".yml")


class CommandLineError(ValueError):
    """A word of the command line that is not part of the dialect."""


def split_command_line(
    args: Sequence[str], *, short: Mapping[str, str] | None = None,
    operand: str | None = None, flags: frozenset[str] = frozenset(),
) -> tuple[str | None, list[str]]:
    """(YAML path or None, ``--key value`` words) from a config command's words.

    ``short`` maps letters to field names (``{"-o": "output_dir"}``); ``operand``
    names the field that plain words fill (several make a list), a word right after an
    option without ``=`` being that option's value, unless the option is one of the
    boolean ``flags`` and the word no boolean (``--name_with_llm hh.jsonl``).
    """
    words = list(args)
    config: str | None = None
    overrides: list[str] = []
    leading = True
    i = 0
    while i < len(words):
        word = words[i]
        value = words[i + 1] if i + 1 < len(words) else None
        if word in ("-c", "--config") or word.startswith("--config="):
            config, i = _value_of(word, value, i)
        elif word in ("-s", "--set") or word.startswith("--set="):
            setting, i = _value_of(word, value, i)
            key, eq, text = (setting or "").partition("=")
            if not eq or not key.strip():
                raise CommandLineError(f"{word} {setting!r}: expected KEY=VALUE")
            overrides.append(f"--{key.strip()}={text}")
        elif short and word in short:
            overrides.append(f"--{short[word]}")
        elif word.startswith("-") and not _is_number(word):
            overrides.append(word)
            leading = False
        elif leading and config is None and word.endswith(_YAML_SUFFIXES) and not overrides:
            config = word
        elif operand is not None and not _after_option(overrides, flags, word):
            overrides.append(f"--{operand}={word}")
        else:
            overrides.append(word)  # an option's value; a stray word fails in parsing
        i += 1
    return config, overrides


def _value_of(word: str, value: str | None, i: int) -> tuple[str | None, int]:
    if "=" in word:
        return word.partition("=")[2], i
    if value is None:
        raise CommandLineError(f"{word} needs a value")
    return value, i + 1


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _after_option(overrides: list[str], flags: frozenset[str], word: str) -> bool:
    """Whether the last word was an option still waiting for its value (``--key``): not a
    boolean flag followed by a word that is no boolean value."""
    from pluralign.config.core import BOOLEAN_WORDS

    last = overrides[-1] if overrides else ""
    if not last.startswith("--") or "=" in last:
        return False
    is_flag = last[2:].replace("-", "_") in flags
    return not is_flag or word.strip().lower() in BOOLEAN_WORDS


def load_from_command_line(
    cls: type, args: Sequence[str], *, short: Mapping[str, str] | None = None,
    operand: str | None = None, before: Mapping[str, Any] | None = None,
    default_file: str | None = None,
) -> Any:
    """``cls`` built from the dataclass defaults, ``before`` (a preset: the demo's
    ``--quick``), the YAML file (given, else ``default_file`` when it exists), then the
    ``--field value`` words. Raises ``ConfigError`` / ``CommandLineError`` (ValueErrors)."""
    from pathlib import Path

    from pluralign.config import load_config

    config, words = split_command_line(args, short=short, operand=operand,
                                       flags=boolean_fields(cls))
    if config is None and default_file is not None and Path(default_file).is_file():
        config = default_file
    return load_config(cls, config, words, preset=before)


def boolean_fields(cls: type) -> frozenset[str]:
    """Names (and aliases) of ``cls``'s boolean fields, which a bare ``--flag`` sets."""
    from pluralign.config import config_fields

    names = {name for name, (_, tp) in config_fields(cls).items() if tp is bool}
    aliases = getattr(cls, "config_aliases", {})
    return frozenset(names | {old for old, new in aliases.items() if new in names})


def print_fields(cls: type) -> None:
    """The table ``--fields`` prints: field, type, default, help."""
    from rich.console import Console
    from rich.table import Table

    from pluralign.config import describe_fields

    table = Table("field", "type", "default", "help", title=f"{cls.__name__} fields")
    for row in describe_fields(cls):
        table.add_row(*row)
    Console().print(table)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one red error line and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)
