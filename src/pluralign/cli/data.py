"""``pluralign data ...``: build, check and summarise group preference data.

The lead app mounts this with ``app.add_typer(data_app, name="data")``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

data_app = typer.Typer(
    name="data",
    help="Build belief-conditioned preference data (opinions, reviews, mmoqa, belief mining), "
         "validate record files and show their statistics.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder (train/eval/test.jsonl, "
                                                        "README.md card, build_report.json).")]
Seed = Annotated[int, typer.Option(help="Seed of sampling, pairs and splits.")]
SplitBy = Annotated[str, typer.Option("--split-by", help="question (no question in two splits) "
                                                         "or example.")]
Backend = Annotated[str, typer.Option("--llm-backend", help="LLM backend: hf or openai.")]
Model = Annotated[str | None, typer.Option("--llm-model", help="hf: model reference (default "
                                           "the bundled SmolLM2); openai: the model name.")]
BaseUrl = Annotated[str | None, typer.Option("--base-url", help="openai: server base URL, e.g. "
                                             "http://127.0.0.1:8000/v1.")]
KeyEnv = Annotated[str | None, typer.Option("--api-key-env", help="openai: NAME of the "
                                            "environment variable holding the API key.")]
Cache = Annotated[str | None, typer.Option("--llm-cache", help="Folder of the LLM answer cache.")]
Timeout = Annotated[float, typer.Option("--llm-timeout", min=0.1, help="openai: seconds before "
                                        "a request is given up (then retried).")]
Retries = Annotated[int, typer.Option("--llm-retries", min=0, help="openai: retries of a request "
                                      "after a timeout or transient error (0: none).")]


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


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


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


def _llm(backend: str, model: str | None, base_url: str | None, key_env: str | None,
         cache: str | None, timeout: float, retries: int):
    from pluralign.llm import LLMConfig

    options = {"backend": backend, "base_url": base_url, "cache_dir": cache,
               "timeout": timeout, "max_retries": retries}
    if model:
        options["model"] = model
    if key_env is not None:
        options["api_key_env"] = key_env
    try:
        return LLMConfig(**options)
    except ValueError as error:
        raise _fail(str(error)) from error


def _save(result, out: Path, title: str, description: str) -> None:
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
                    "(--llm-backend openai, or --llm-model).")
        raise _fail(f"no records were built (see {paths['card']}).{hint}")


@data_app.command("opinions")
def opinions_command(
    out: Out,
    source: Annotated[str, typer.Option(help="Local JSONL/CSV or Hub id of GlobalOpinionQA.")
                      ] = "Anthropic/llm_global_opinions",
    groups: Annotated[list[str] | None, typer.Option("--group", "-g", help="Group (country); "
                                                     "repeat for several. Default: all.")] = None,
    option_map: Annotated[str | None, typer.Option("--option-map", help="Option -> class map: "
                                                   "default (pluralign's rules), paper (the "
                                                   "GDPO paper's Table 5 map) or a JSON file; "
                                                   "the card lists where it differs from "
                                                   "default.")] = None,
    writer: Annotated[str, typer.Option(help="Who writes questions and responses: per-belief "
                                        "(short requests, works with the bundled 135M model), "
                                        "framed (responses only; fixed framings around the "
                                        "unchanged question, for models too small to "
                                        "paraphrase) or paper (GDPO appendix-A prompt, "
                                        "capable models only).")] = "per-belief",
    n_styles: Annotated[int, typer.Option("--styles", min=1, help="Styles per question "
                                          "(per-belief, framed: at most 6).")] = 3,
    pairs: Annotated[int, typer.Option("--pairs-per-question", min=1)] = 30,
    uniform: Annotated[bool, typer.Option("--uniform", help="Accepted belief drawn uniformly "
                                          "(uniform-SFT data).")] = False,
    max_questions: Annotated[int | None, typer.Option(min=1, help="At most N rows.")] = None,
    split_by: SplitBy = "question",
    seed: Seed = 0,
    llm_backend: Backend = "hf", llm_model: Model = None, base_url: BaseUrl = None,
    api_key_env: KeyEnv = None, llm_cache: Cache = None, llm_timeout: Timeout = 60.0,
    llm_retries: Retries = 4,
) -> None:
    """Build opinion QA pairs from GlobalOpinionQA with an LLM.

    The default per-belief writer sends short requests (a paraphrase per style, a response
    per style and belief) that the bundled SmolLM2-135M can answer; --writer framed asks
    only for the responses and frames the unchanged question in fixed styles (the bundled
    model's paraphrases are rarely usable); --writer paper sends the GDPO paper's
    appendix-A prompt, which needs a capable model.

    Examples:

        pluralign data opinions --source dev_groups.jsonl -g Japan --max-questions 20 -o data/jp

        pluralign data opinions -g "United States" --writer paper --llm-backend openai -o data/us

        pluralign data opinions --source dev_groups.jsonl -g Japan --option-map paper -o data/jp

        pluralign data opinions --source dev_groups.jsonl -g Pakistan --writer framed -o data/pk

        pluralign data opinions --source dev_groups.jsonl -g Pakistan --uniform -o data/pk-u
    """
    from pluralign.data.builders import OpinionsConfig

    try:
        config = OpinionsConfig(
            source=source, groups=list(groups or []), option_map=option_map, writer=writer,
            n_styles=n_styles, pairs_per_question=pairs, uniform=uniform,
            max_questions=max_questions,
            split_by=split_by, seed=seed,
            llm=_llm(llm_backend, llm_model, base_url, api_key_env, llm_cache, llm_timeout,
                     llm_retries))
        result = _builder("opinions")(config)
    except _user_errors() as error:
        raise _fail(str(error)) from error
    _save(result, out, "Opinion QA pairs (GlobalOpinionQA)",
          f"Styled one-turn dialogues per question, written by the {writer} writer "
          f"({WRITER_NOTES.get(writer, writer)}); accepted belief drawn "
          + ("uniformly" if uniform else "from the group's distribution")
          + ", rejected uniformly from the other beliefs, same style.")


@data_app.command("reviews")
def reviews_command(
    reviews: Annotated[Path, typer.Argument(help="Review JSONL(.gz): asin, overall, reviewText.")],
    out: Out,
    metadata: Annotated[Path | None, typer.Option(
        help="Movie metadata, JSON lines(.gz) keyed by asin: {\"asin\": ..., \"title\": ..., "
             "\"year\": ..., \"director\": ..., \"genre\": ..., \"plot\": ...} (each field but "
             "asin optional; lists for director/genre; OMDb's capitalised names too). Prompts "
             "then read like the paper's: 'Heat, 1995, Michael Mann (Genre: Crime, Drama). "
             "PLOT'. Without it a prompt names only the product id.")] = None,
    min_reviews: Annotated[int, typer.Option("--min-reviews", min=2)] = 5,
    group: Annotated[str, typer.Option(help="Group name.")] = "amazon-movies-reviewers",
    sequence_format: Annotated[str, typer.Option(
        "--sequence-format", help="Format the records name for training (sequence_format "
        "auto): reviews ({rating}{review} after the <|belief|> separator) or reviews-paper "
        "(the paper's exact <Q>{prompt}<A>{rating}{review}).")] = "reviews",
    split_by: SplitBy = "question",
    seed: Seed = 0,
) -> None:
    """Build rating-belief pairs from Amazon-style movie reviews.

    Records name the `reviews` sequence format, so training (sequence_format auto)
    writes the paper's `{rating}{review}` answer. Movie descriptions come from an
    optional local metadata file (no network lookups).

    Examples:

        pluralign data reviews movies_and_tv_5core_sample.jsonl --out data/movies

        pluralign data reviews reviews.jsonl.gz --metadata meta.jsonl --min-reviews 20 -o data/m
    """
    from pluralign.data.builders import ReviewsConfig
    from pluralign.data.builders.reviews import METADATA_HINT

    try:
        result = _builder("reviews")(ReviewsConfig(
            reviews=str(reviews), metadata=str(metadata) if metadata else None,
            min_reviews=min_reviews, group=group, split_by=split_by, seed=seed,
            sequence_format=sequence_format))
    except _user_errors() as error:
        raise _fail(str(error)) from error
    _save(result, out, "Movie review pairs", "Beliefs are the ratings 1..5; the target is each "
          "movie's rating histogram; rejected = a review of the same movie with another rating. "
          f"Records name the sequence format `{sequence_format}` (training with "
          "sequence_format auto writes {rating}{review}).")
    bare = result.report.counts["kept movies without metadata"]
    if bare:
        typer.secho(f"note: {bare} movies have prompts that name only their product id; "
                    + ("to describe them, " + METADATA_HINT if metadata is None
                       else f"{metadata} has no line for them (listed in the card)"),
                    fg=typer.colors.YELLOW, err=True)


@data_app.command("mmoqa")
def mmoqa_command(
    source: Annotated[str, typer.Argument(help="Hub id (Binwei01/mmoqa_usa ...) or local file.")],
    out: Out,
    group: Annotated[str | None, typer.Option(help="Group name (default: from the id).")] = None,
    split_by: SplitBy = "question",
    seed: Seed = 0,
) -> None:
    """Convert the GDPO paper's released sets (mmoqa_usa/pk/sa, movie_review) to records.

    Examples:

        pluralign data mmoqa Binwei01/mmoqa_usa --out data/mmoqa-us

        pluralign data mmoqa ./mmoqa_pk_train.jsonl --group Pakistan --out data/mmoqa-pk
    """
    from pluralign.data.builders import MmoqaConfig

    try:
        result = _builder("mmoqa")(MmoqaConfig(source=source, group=group, split_by=split_by,
                                         seed=seed))
    except _user_errors() as error:
        raise _fail(str(error)) from error
    _save(result, out, "GDPO released dialogue set", f"Converted from {source}.")


@data_app.command("mine")
def mine_command(
    source: Annotated[Path, typer.Argument(help="JSONL(.gz) with chosen/rejected transcripts.")],
    out: Out,
    max_examples: Annotated[int, typer.Option("--max-examples", min=1)] = 50,
    num_statements: Annotated[int, typer.Option("--num-statements", min=1)] = 5,
    name_with_llm: Annotated[bool, typer.Option("--name-with-llm", help="Name clusters with "
                                                "the LLM instead of the medoid.")] = False,
    own_principle_agrees: Annotated[bool, typer.Option(
        "--own-principle-agrees/--label-all", help="An example agrees with the statement of "
        "its own principle's cluster without a label request (default), or the LLM labels "
        "every example for every statement (paper).")] = True,
    group: Annotated[str, typer.Option(help="Group name.")] = "annotators",
    split_by: SplitBy = "question",
    seed: Seed = 0,
    llm_backend: Backend = "hf", llm_model: Model = None, base_url: BaseUrl = None,
    api_key_env: KeyEnv = None, llm_cache: Cache = None, llm_timeout: Timeout = 60.0,
    llm_retries: Retries = 4,
) -> None:
    """Mine beliefs from a preference set with no beliefs (GDPO paper appendix I).

    Examples:

        pluralign data mine harmless_base_test.jsonl.gz --max-examples 30 --out data/hh

        pluralign data mine hh.jsonl.gz --llm-backend openai --llm-model qwen -o data/hh
    """
    from pluralign.data.builders import MiningConfig

    try:
        config = MiningConfig(
            source=str(source), max_examples=max_examples, num_statements=num_statements,
            name_with_llm=name_with_llm, own_principle_agrees=own_principle_agrees,
            group=group, split_by=split_by, seed=seed,
            llm=_llm(llm_backend, llm_model, base_url, api_key_env, llm_cache, llm_timeout,
                     llm_retries))
        result = _builder("mine")(config)
    except _user_errors() as error:
        raise _fail(str(error)) from error
    _save(result, out, "Mined beliefs", "Statements mined from chosen/rejected choices; per "
          "statement the agree/disagree label counts give the distribution. "
          + ("An example agrees with the statement of its own principle's cluster (label "
             "source 'own principle'); the LLM labelled the other examples ('labeller')."
             if own_principle_agrees else "The LLM labelled every example per statement."))


@data_app.command("validate")
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
            raise _fail(f"{path}: no such file")
        result = validate_file(path)
        for problem in result.problems:
            typer.echo(problem)
        typer.echo(f"{path}: {result.valid} valid records, {len(result.problems)} problems")
        bad += len(result.problems)
    if bad:
        raise typer.Exit(1)


@data_app.command("stats")
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
            raise _fail(str(error)) from error
        if as_json:
            typer.echo(json.dumps({"file": str(path), **stats}, ensure_ascii=False))
            continue
        typer.echo(f"{path}")
        for key, value in stats.items():
            typer.echo(f"  {key}: {value}")


@data_app.command("build")
def build_command(
    name: Annotated[str, typer.Argument(help="A registered builder (`pluralign ls builders`), "
                                        "a plugin's included.")],
    out: Out,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML file of the "
                                                "builder's config.")] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE of the "
                                                       "builder's config; repeat.")] = None,
) -> None:
    """Run any registered builder, plugins' included, from its config (YAML and --set).

    Examples:

        pluralign data build demo --set pairs_per_question=4 -o data/demo

        pluralign data build mmoqa --set source=./mmoqa_pk_train.jsonl -o data/mmoqa-pk
    """
    try:
        builder = _builder(name)
        overrides = []
        for item in settings or []:
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"--set {item!r}: expected KEY=VALUE")
            overrides.append(f"--{key}={value}")
        result = builder(builder_config_class(builder).load(config, overrides))
    except (*_user_errors(), KeyError) as error:
        raise _fail(str(error)) from error
    doc = (builder.__doc__ or "").strip().splitlines()
    _save(result, out, f"{name} data", doc[0] if doc else f"Built by the {name} builder.")
