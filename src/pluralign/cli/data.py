"""``pluralign data ...``: build, check and summarise group preference data.

The lead app mounts this with ``app.add_typer(data_app, name="data")``. Every builder
command speaks the one dialect (:mod:`pluralign.cli.options`):
``pluralign data BUILDER [CONFIG.yaml] --field value ... --output_dir DIR``, the fields
being those of the builder's config class (``--fields`` lists them), ``--output_dir``
(``-o``, older ``--out``) the output folder. ``validate`` and ``stats`` take files only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from pluralign.cli.options import CONFIG_COMMAND, DIALECT_HELP, Fields, fail

#: The help epilog of every builder command.
DATA_HELP = DIALECT_HELP + " `--output_dir DIR` (`-o`) is the output folder."
#: Keywords of ``data_app.command(...)`` for a builder command.
DATA_COMMAND: dict[str, Any] = {**CONFIG_COMMAND, "epilog": DATA_HELP,
                                "options_metavar": "[CONFIG.yaml] [--FIELD VALUE]... -o DIR"}


data_app = typer.Typer(
    name="data",
    help="Build belief-conditioned preference data (opinions, reviews, mmoqa, belief mining), "
         "validate record files and show their statistics.\n\n"
         "A builder command takes `[CONFIG.yaml] --field value ... -o DIR`: the fields of its "
         "config (`pluralign data BUILDER --fields`), the output folder as `--output_dir` "
         "(`-o`).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

#: Help of the ``output_dir`` field every builder command adds to its config's fields.
OUTPUT_HELP = ("Output folder (train/eval/test.jsonl, README.md card, build_report.json); "
               "required. -o, or the older --out.")
MISSING_OUTPUT = "--output_dir DIR (-o DIR) is required: the folder to write the splits into"


#: What each opinions writer did, for the dataset card.
WRITER_NOTES = {
    "per-belief": "one short paraphrase request per style and one short response request per "
                  "style and belief; unusable paraphrases were replaced by the original "
                  "question, style 'original', and are counted below",
    "paper": "the GDPO paper's appendix-A prompt, all styles and answers of a question in "
             "one request",
    "framed": "one short response request per belief to the question itself; the styles are "
              "fixed conversational framings around the unchanged question",
}


# ------------------------------------------------------------- the dataset cards


def _opinions_card(config: Any) -> tuple[str, str]:
    return ("Opinion QA pairs (GlobalOpinionQA)",
            f"Styled one-turn dialogues per question, written by the {config.writer} writer "
            f"({WRITER_NOTES.get(config.writer, config.writer)}); accepted belief drawn "
            + ("uniformly" if config.uniform else "from the group's distribution")
            + ", rejected uniformly from the other beliefs, same style.")


def _reviews_card(config: Any) -> tuple[str, str]:
    return ("Movie review pairs",
            "Beliefs are the ratings 1..5; the target is each movie's rating histogram; "
            "rejected = a review of the same movie with another rating. Records name the "
            f"sequence format `{config.sequence_format}` (training with sequence_format auto "
            "writes {rating}{review}).")


def _mmoqa_card(config: Any) -> tuple[str, str]:
    return "GDPO released dialogue set", f"Converted from {config.source}."


def _mine_card(config: Any) -> tuple[str, str]:
    return ("Mined beliefs",
            "Statements mined from chosen/rejected choices; per statement the agree/disagree "
            "label counts give the distribution. "
            + ("An example agrees with the statement of its own principle's cluster (label "
               "source 'own principle'); the LLM labelled the other examples ('labeller')."
               if config.own_principle_agrees
               else "The LLM labelled every example per statement."))


def _demo_card(config: Any) -> tuple[str, str]:
    return ("pluralign demo opinions",
            "Survey-style questions written by pluralign for three invented regions; "
            "accepted belief drawn "
            + ("uniformly" if config.uniform else "from the region's distribution")
            + ", rejected uniformly from the other beliefs.")


#: The card title and description of each of pluralign's builders, from its config; any
#: other builder (a plugin's) gets its name and the first line of its docstring.
CARD_TEXTS: dict[str, Callable[[Any], tuple[str, str]]] = {
    "opinions": _opinions_card, "reviews": _reviews_card, "mmoqa": _mmoqa_card,
    "mine": _mine_card, "demo": _demo_card,
}


def card_texts(name: str, builder: Callable[..., Any], config: Any) -> tuple[str, str]:
    """(title, description) of the dataset card of ``builder`` run as ``name`` on ``config``."""
    describe = CARD_TEXTS.get(name)
    if describe is not None:
        return describe(config)
    doc = (builder.__doc__ or "").strip().splitlines()
    return f"{name} data", doc[0] if doc else f"Built by the {name} builder."


# ----------------------------------------------------------- the builder commands


#: The words of each builder command besides ``--field value``: its short letters and the
#: field that plain words fill (the natural operand: ``data reviews FILE``), also through
#: ``data build NAME``.
SHORT: dict[str, dict[str, str]] = {"opinions": {"-g": "groups"}, "demo": {"-g": "groups"}}
OPERAND: dict[str, str] = {"reviews": "reviews", "mmoqa": "source", "mine": "source"}
#: Older flags that set a field to false (``--own-principle-agrees/--label-all``).
NEGATIONS: dict[str, dict[str, str]] = {"mine": {"label_all": "own_principle_agrees"}}
#: What an operand that must be given is, for its one-line error.
REQUIRED_OPERAND: dict[str, str] = {"reviews": "the review file (JSONL, .gz too)",
                                    "mine": "the chosen/rejected preference file"}


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix (one line, no traceback): bad values, missing files,
    an LLM that cannot be set up (no API key). Imported late: `--help` stays fast."""
    from pluralign.llm import LLMError

    return (ValueError, FileNotFoundError, LLMError)


def _builder(name: str) -> Callable[..., Any]:
    """The data builder registered as ``name`` (``pluralign ls builders``), a plugin's too."""
    import importlib

    from pluralign.registry import BUILDERS, load_plugins

    for module in ("pluralign.data.builders", "pluralign.data.demo"):  # pluralign's builders
        importlib.import_module(module)

    if name not in BUILDERS:
        load_plugins()  # only then: pluralign's own builders need no entry-point scan
    return BUILDERS.get(name)


def builder_config_class(builder: Callable[..., Any]) -> type[Any]:
    """The config class of a builder: the annotation of its first parameter.

    Every builder takes its config first (``build_x(config: XConfig, ...)``);
    an optional config (``XConfig | None``) names its class the same way.
    """
    import inspect
    import typing

    first = next(iter(inspect.signature(builder).parameters), None)
    hint = typing.get_type_hints(builder).get(first) if first else None
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and hasattr(candidate, "load"):
            return candidate
    raise ValueError(f"builder {getattr(builder, '__name__', builder)!r}: its first parameter "
                     "must be annotated with its config class (a YamlConfig)")


def _no_checks(self: Any) -> None:
    """The command-line class checks nothing: :func:`builder_config` builds the real config,
    whose own ``__post_init__`` checks the values once."""


def command_config_class(cls: type[Any]) -> type[Any]:
    """``cls`` plus the field ``output_dir`` (older name ``out``), read from the same words
    and YAML file as the builder's fields; ``--fields`` lists it with them."""
    import dataclasses

    extra = [] if "output_dir" in {f.name for f in dataclasses.fields(cls)} else [
        ("output_dir", str | None, dataclasses.field(default=None,
                                                     metadata={"help": OUTPUT_HELP}))]
    command = dataclasses.make_dataclass(
        cls.__name__, extra, bases=(cls,),
        namespace={"config_aliases": {**getattr(cls, "config_aliases", {}),
                                      "out": "output_dir"},
                   "__post_init__": _no_checks},
        frozen=cls.__dataclass_params__.frozen)
    command.__module__, command.__qualname__ = cls.__module__, cls.__qualname__
    return command


def builder_config(loaded: Any, cls: type[Any]) -> Any:
    """The ``cls`` config (checked) of a :func:`command_config_class` instance."""
    import dataclasses

    return cls(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(cls) if f.init})


def _negated(words: Sequence[str], negations: Mapping[str, str]) -> list[str]:
    """Older false-flags as fields: ``--label-all`` -> ``--own_principle_agrees=false``."""
    out = []
    for word in words:
        key = word[2:].replace("-", "_") if word.startswith("--") else None
        out.append(f"--{negations[key]}=false" if key in negations else word)
    return out


def run_builder(name: str, args: Sequence[str], fields: bool = False) -> tuple[Any, Any]:
    """``pluralign data NAME [CONFIG.yaml] --field value -o DIR``: load the builder's config
    from the words, build, write the splits and the card; (result, config)."""
    from pluralign.cli.options import load_from_command_line, print_fields

    try:
        builder = _builder(name)
        cls = builder_config_class(builder)
    except (ValueError, KeyError) as error:
        raise fail(str(error)) from error
    command = command_config_class(cls)
    if fields:
        print_fields(command)
        raise typer.Exit()
    operand = OPERAND.get(name)
    try:
        loaded = load_from_command_line(
            command, _negated(args, NEGATIONS.get(name, {})),
            short={"-o": "output_dir", **SHORT.get(name, {})}, operand=operand)
    except ValueError as error:
        raise fail(str(error)) from error
    if not loaded.output_dir:
        raise fail(MISSING_OUTPUT)
    if name in REQUIRED_OPERAND and operand and not getattr(loaded, operand):
        raise fail(f"{REQUIRED_OPERAND[name]} is required: `pluralign data {name} FILE -o DIR` "
                   f"(or --{operand} FILE)")
    try:
        config = builder_config(loaded, cls)
        result = builder(config)
    except (*_user_errors(), KeyError) as error:
        raise fail(str(error)) from error
    _save(result, Path(loaded.output_dir), *card_texts(name, builder, config))
    return result, config


def _save(result: Any, out: Path, title: str, description: str) -> None:
    from pluralign.data.builders import save_build

    paths = save_build(result, out, title=title, description=description)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in result.splits.items())
    typer.echo(f"wrote {result.total} records ({sizes}) to {out}")
    for reason, count in sorted(result.report.skipped.items()):
        typer.echo(f"skipped {count}: {reason}")
    for what, count in sorted(result.report.counts.items()):
        # Every builder's LLM and parse failures, fallbacks and unusable answers.
        if count and any(word in what for word in ("failures", "fallbacks", "empty",
                                                   "unusable")):
            typer.echo(f"{what}: {count}")
    if result.report.unmapped_options:
        typer.secho(f"warning: {len(result.report.unmapped_options)} unmapped options "
                    f"(listed in {paths['card']})", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"card: {paths['card']}")
    if result.total == 0:
        # Empty splits are never a usable dataset: fail loudly (the card stays, to diagnose).
        counts = result.report.counts
        hint = ""
        if any("parse failures" in what and n for what, n in counts.items()):
            hint = (" The LLM's answers could not be parsed; a very small model (such as the "
                    "bundled SmolLM2-135M) rarely follows these prompts: use a larger one "
                    "(--llm.backend openai, or --llm.model).")
        raise fail(f"no records were built (see {paths['card']}).{hint}")


@data_app.command("opinions", **DATA_COMMAND)
def opinions_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Build opinion QA pairs from GlobalOpinionQA with an LLM.

    `pluralign data opinions [CONFIG.yaml] --field value ... -o DIR` with the fields of
    OpinionsConfig (`--fields`): `--source`, `--groups` (`-g`, repeat for several),
    `--writer`, `--n_styles`, `--pairs_per_question`, the LLM as `--llm.backend`,
    `--llm.model`, `--llm.base_url` ... The older names still work: `--group`, `--styles`,
    `--llm-backend`, `--llm-model`, `--base-url`, `--api-key-env`, `--llm-cache`,
    `--llm-timeout`, `--llm-retries`, `--out`.

    The default per-belief writer sends short requests (a paraphrase per style, a response
    per style and belief) that the bundled SmolLM2-135M can answer; --writer framed asks
    only for the responses and frames the unchanged question in fixed styles (the bundled
    model's paraphrases are rarely usable); --writer paper sends the GDPO paper's
    appendix-A prompt, which needs a capable model.

    Examples:

        pluralign data opinions --source dev_groups.jsonl -g Japan --max_questions 20 -o data/jp

        pluralign data opinions -g "United States" --writer paper --llm.backend openai -o data/us

        pluralign data opinions --source dev_groups.jsonl -g Japan --option_map paper -o data/jp

        pluralign data opinions --source dev_groups.jsonl -g Pakistan --writer framed -o data/pk

        pluralign data opinions opinions.yaml --uniform --output_dir data/pk-u

        pluralign data opinions --fields
    """
    run_builder("opinions", ctx.args, fields)


@data_app.command("reviews", **DATA_COMMAND)
def reviews_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Build rating-belief pairs from Amazon-style movie reviews.

    `pluralign data reviews REVIEWS.jsonl [--field value ...] -o DIR`: the review file
    (asin, overall, reviewText; .gz too) is the plain word (or `--reviews`), the other
    fields are ReviewsConfig's (`--fields`). `--metadata FILE` names movie metadata, JSON
    lines(.gz) keyed by asin: {"asin": ..., "title": ..., "year": ..., "director": ...,
    "genre": ..., "plot": ...} (each field but asin optional; lists for director/genre;
    OMDb's capitalised names too); prompts then read like the paper's: 'Heat, 1995,
    Michael Mann (Genre: Crime, Drama). PLOT'. Without it a prompt names only the
    product id (no network lookups).

    Records name the `reviews` sequence format (`--sequence_format reviews-paper`: the
    paper's exact layout), so training (sequence_format auto) writes the paper's
    `{rating}{review}` answer.

    Examples:

        pluralign data reviews movies_and_tv_5core_sample.jsonl --output_dir data/movies

        pluralign data reviews reviews.jsonl.gz --metadata meta.jsonl --min_reviews 20 -o data/m

        pluralign data reviews --fields
    """
    from pluralign.data.builders.reviews import METADATA_HINT

    result, config = run_builder("reviews", ctx.args, fields)
    bare = result.report.counts["kept movies without metadata"]
    if bare:
        typer.secho(f"note: {bare} movies have prompts that name only their product id; "
                    + ("to describe them, " + METADATA_HINT if config.metadata is None
                       else f"{config.metadata} has no line for them (listed in the card)"),
                    fg=typer.colors.YELLOW, err=True)


@data_app.command("mmoqa", **DATA_COMMAND)
def mmoqa_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Convert the GDPO paper's released sets (mmoqa_usa/pk/sa, movie_review) to records.

    `pluralign data mmoqa SOURCE [--field value ...] -o DIR`: the Hub id or local file is
    the plain word (or `--source`), the other fields are MmoqaConfig's (`--fields`).

    Examples:

        pluralign data mmoqa Binwei01/mmoqa_usa --output_dir data/mmoqa-us

        pluralign data mmoqa ./mmoqa_pk_train.jsonl --group Pakistan -o data/mmoqa-pk
    """
    run_builder("mmoqa", ctx.args, fields)


@data_app.command("mine", **DATA_COMMAND)
def mine_command(ctx: typer.Context, fields: Fields = False) -> None:
    """Mine beliefs from a preference set with no beliefs (GDPO paper appendix I).

    `pluralign data mine SOURCE.jsonl [--field value ...] -o DIR`: the chosen/rejected
    file is the plain word (or `--source`), the other fields are MiningConfig's
    (`--fields`), the LLM as `--llm.backend`, `--llm.model` ... (older names: `--llm-backend`,
    `--llm-model`, `--base-url`, `--api-key-env`, `--llm-cache`, `--llm-timeout`,
    `--llm-retries`; `--label-all` for `--own_principle_agrees false`).

    Examples:

        pluralign data mine harmless_base_test.jsonl.gz --max_examples 30 --output_dir data/hh

        pluralign data mine hh.jsonl.gz --llm.backend openai --llm.model qwen -o data/hh

        pluralign data mine hh.jsonl.gz --own_principle_agrees false -o data/hh-paper
    """
    run_builder("mine", ctx.args, fields)


@data_app.command("validate", context_settings={}, epilog=None)
def validate_command(
    files: Annotated[list[Path], typer.Argument(help="Record JSONL files.")],
) -> None:
    """Check record files: every bad line is reported as file:line: field: reason.

    Examples:

        pluralign data validate data/us/train.jsonl

        pluralign data validate data/us/*.jsonl
    """
    from pluralign.data.builders import validate_file

    bad = 0
    for path in files:
        if not path.is_file():
            raise fail(f"{path}: no such file")
        result = validate_file(path)
        for problem in result.problems:
            typer.echo(problem)
        typer.echo(f"{path}: {result.valid} valid records, {len(result.problems)} problems")
        bad += len(result.problems)
    if bad:
        raise typer.Exit(1)


@data_app.command("stats", context_settings={}, epilog=None)
def stats_command(
    files: Annotated[list[Path], typer.Argument(help="Record JSONL files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show groups, questions, beliefs and the majority/minority chosen share.

    Examples:

        pluralign data stats data/us/train.jsonl

        pluralign data stats data/us/train.jsonl data/us/test.jsonl --json
    """
    from pluralign.data import RecordFileError, read_examples
    from pluralign.data.builders import dataset_stats

    for path in files:
        try:
            stats = dataset_stats(read_examples(path))
        except (RecordFileError, FileNotFoundError) as error:
            raise fail(str(error)) from error
        if as_json:
            typer.echo(json.dumps({"file": str(path), **stats}, ensure_ascii=False))
            continue
        typer.echo(f"{path}")
        for key, value in stats.items():
            typer.echo(f"  {key}: {value}")


@data_app.command("build", **DATA_COMMAND)
def build_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A registered builder (`pluralign ls builders`), "
                                        "a plugin's included.")],
    fields: Fields = False,
) -> None:
    """Run any registered builder, plugins' included, from its config.

    `pluralign data build NAME [CONFIG.yaml] --field value ... -o DIR` with the fields
    of the builder's config class (`pluralign data build NAME --fields`); `--set KEY=VALUE`
    is the same as `--KEY VALUE`.

    Examples:

        pluralign data build demo --pairs_per_question 4 -o data/demo

        pluralign data build mmoqa ./mmoqa_pk_train.jsonl --output_dir data/mmoqa-pk

        pluralign data build my-builder my_builder.yaml --set questions=3 -o data/mine

        pluralign data build demo --fields
    """
    run_builder(name, ctx.args, fields)
