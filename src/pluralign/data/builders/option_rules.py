"""Rules that map a survey answer option to a belief class 0..5.

The classes follow the GDPO paper's scale (its Table 5): 0 is a
non-substantive answer (don't know, refused, missing), 1 the strongest
disagreement or most negative answer, 2 a mild negative, 3 the middle
(neither, about the same, depends), 4 a mild positive and 5 the strongest
agreement or most positive answer. "Positive" means agreeing with the
statement in the question, so "Very big problem" is 5 and "Not a problem
at all" is 1.

These rules are pluralign's own; ``src/pluralign/data/option_map.json`` is
what they give on the options of the GlobalOpinionQA development slice
(see :func:`build_option_map`). Options that no rule recognises stay
unmapped and are reported by the builders, never guessed.

Two maps are bundled and selectable by name (:data:`OPTION_MAPS`): ``default``,
the rules' map above, and ``paper``, the GDPO paper's own map of 373 options
(its Table 5: 4/42/118/33/126/50 options in classes 0..5), as released with the
paper's code (BigBinnie/GDPO ``data/option_map.json``, Apache-2.0). On the 240
options both maps cover they disagree on 10 ("A little" is 2 in the default
map, 4 in the paper's); :func:`option_map_differences` lists them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pluralign.registry import Registry, did_you_mean

#: Longer options are statements whose direction wording rules cannot tell.
MAX_WORDS = 6

#: Where the project's default map lives inside the package.
DEFAULT_MAP_RESOURCE = "option_map.json"

_NON_ANSWER = re.compile(
    r"^(dk|don'?t know|refused|no answer|missing|other missing|not applicable|"
    r"never heard|haven'?t heard enough|can'?t rate|hard to say|not a moral issue|"
    r"other( reasons)?( \(|$)|none of (the above|these) \(|all of the above \()",
    re.IGNORECASE,
)
_MIDDLE = re.compile(
    r"^(neither|both( \(|$|/)|about the same|same( \(|$| as)|stay(ed)? (about )?the same|"
    r"staying about the same|depends|no change|has not changed|not change|no difference|"
    r"not much difference|does not make a difference|no effect|no impact|keep (about )?same|"
    r"about right|right amount|the restrictions were about right|as important as|average$|"
    r"fair$|neither agree|all equally|keep same|about as)",
    re.IGNORECASE,
)
# Words whose bare form is the positive pole and negated form the negative one.
_POSITIVE_WORDS = (
    "good|favorable|favourable|agree|approve|important|likely|satisfied|confident|"
    "concerned|serious|effective|interested|well|often|frequently|closely|close|reliable|"
    "justified|justifiable|acceptable|worried|excited|strong|easy|great|trust|better|"
    "positive|optimistic|support|favor|favour|help|benefit|more|increase|increased|"
    "improve|yes|will|should|has|right decision|safe|big problem|problem|threat|danger|"
    "much|a lot|priority|democratic|happy|confidence|fair amount"
)
_NEGATIVE_POLES = re.compile(
    r"^(very |somewhat |mostly |fairly |strongly |completely |much )?"
    r"(bad|unfavorable|unfavourable|disagree|disapprove|unlikely|dissatisfied|difficult|"
    r"poor|worse|negative|pessimistic|oppose|opposes|hurt|harm|less|decrease|decreased|"
    r"worsen|wrong decision|unacceptable|morally unacceptable|weaker|disappointed)\b",
    re.IGNORECASE,
)
_STRONG = re.compile(
    r"^(very|completely|strongly|a great deal|great deal|a lot|definitely|always|"
    r"much (more|better)|totally|extremely|trust completely|one of the most|top priority|"
    r"a very|major|a great|fully|bigger)\b|strongly$|completely$",
    re.IGNORECASE,
)
_MILD = re.compile(
    r"^(somewhat|fairly|moderately|mostly|some|a fair amount|fair amount|quite|rather|"
    r"probably|sometimes|moderate|just some|a lower|slightly|trust somewhat)\b",
    re.IGNORECASE,
)
_NOT_AT_ALL = re.compile(
    r"(not\b.*\bat all|\bnever\b|^none( at all)?$|^no \w+( \w+)? at all|"
    r"^not a \w+( \w+)? at all|"
    r"^no (confidence|influence|threat|danger|priority|changes)|nothing at all|^definitely not|"
    r"would never|^have not done and would never|^there are not|very unlikely$)",
    re.IGNORECASE,
)
_NOT_MUCH = re.compile(
    r"(^(small|smaller|minor|a little|only a little|rarely|only a few|few|no)\b|"
    r"\b(not|less|worse|dangerous|divided|enemy|longer)\b)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"^(\d+(\.0)?)(\s|$)")


def _numeric_class(text: str) -> int | None:
    """A 0..10 scale point: five equal bins from the low to the high anchor."""
    match = _NUMBER.match(text.strip())
    if not match:
        return None
    value = float(match.group(1))
    if not 0 <= value <= 10:
        return None
    return min(5, max(1, int(value // 2) + 1)) if value < 10 else 5


def classify_option(option: str | float | int) -> int | None:
    """The belief class 0..5 of an answer option, or None when no rule applies."""
    if isinstance(option, (int, float)) and not isinstance(option, bool):
        option = str(float(option))
    text = " ".join(str(option).split())
    if not text:
        return None
    numeric = _numeric_class(text)
    if numeric is not None:
        return numeric
    if _NON_ANSWER.search(text):
        return 0
    if len(text.split()) > MAX_WORDS:
        return None  # a whole statement: its direction is not a matter of wording
    if _NOT_AT_ALL.search(text):
        return 1
    if _MIDDLE.search(text):
        return 3
    negative_pole = _NEGATIVE_POLES.search(text)
    if negative_pole:
        return 1 if _STRONG.search(text) else 2
    if _NOT_MUCH.search(text):
        return 2
    if re.search(rf"\b({_POSITIVE_WORDS})\b", text, re.IGNORECASE):
        if _STRONG.search(text):
            return 5
        return 4
    return None


def build_option_map(options: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """``(mapped, unmapped)``: the class of every option a rule covers, and the rest."""
    mapped: dict[str, int] = {}
    unmapped: list[str] = []
    for option in dict.fromkeys(str(o) for o in options):
        cls = classify_option(option)
        if cls is None:
            unmapped.append(option)
        else:
            mapped[option] = cls
    return mapped, unmapped


@dataclass(frozen=True)
class BundledOptionMap:
    """An option map shipped inside the package."""

    resource: str  #: file name under ``pluralign/data``
    description: str  #: what it is, for dataset cards


#: The bundled option maps by name; ``--option-map`` takes one of these names or a file.
OPTION_MAPS: Registry[BundledOptionMap] = Registry("option map")
OPTION_MAPS.register("default", BundledOptionMap(
    DEFAULT_MAP_RESOURCE, "pluralign's option rules, applied to the GlobalOpinionQA "
    "development slice"))
OPTION_MAPS.register("paper", BundledOptionMap(
    "option_map_paper.json", "the GDPO paper's Table 5 map, as released in BigBinnie/GDPO "
    "data/option_map.json, Apache-2.0"))

#: The map used when none is named.
DEFAULT_MAP = "default"


def _looks_like_a_name(spec: str) -> bool:
    """A bare word (no folder, no suffix): meant as a bundled map's name, not a file."""
    return not any(sep in spec for sep in ("/", "\\")) and not Path(spec).suffix


def bundled_map_name(spec: str | Path | None) -> str | None:
    """The bundled map that ``spec`` names, or None when ``spec`` is a file path.

    ``None`` names the default map. A bundled name wins over a file of the same
    name in the working folder (write ``./paper`` for that file); an existing
    file or anything with a folder or suffix is a path. Any other bare word is
    a ``ValueError`` naming the closest bundled maps.
    """
    if spec is None:
        return DEFAULT_MAP
    if isinstance(spec, Path):
        return None
    if spec in OPTION_MAPS:
        return spec
    if Path(spec).is_file() or not _looks_like_a_name(spec):
        return None
    raise ValueError(f'unknown option map "{spec}".{did_you_mean(spec, OPTION_MAPS.names())} '
                     f"Known option maps: {', '.join(OPTION_MAPS.names())}; or give the path "
                     "of a JSON file option -> class id")


def describe_option_map(spec: str | Path | None) -> str:
    """Where a map comes from, as Markdown for cards: `` `paper` (the GDPO paper's ...)``
    for a bundled map, the path in backticks for a file."""
    name = bundled_map_name(spec)
    if name is None:
        return f"`{spec}`"
    return f"`{name}` ({OPTION_MAPS.get(name).description})"


def load_option_map(spec: str | Path | None = None) -> dict[str, int]:
    """An option -> class map: a bundled map by name (``default``, ``paper``; see
    :func:`bundled_map_name`) or a JSON file; ``None`` is the default map."""
    name = bundled_map_name(spec)
    if name is None:
        text = Path(spec).read_text(encoding="utf-8")  # type: ignore[arg-type]
        where = str(spec)
    else:
        resource = OPTION_MAPS.get(name).resource
        text = resources.files("pluralign.data").joinpath(resource).read_text(encoding="utf-8")
        where = f"pluralign/data/{resource}"
    return _checked_map(json.loads(text), where)


def _checked_map(data: object, where: str) -> dict[str, int]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: an option map must be a JSON object option -> class id")
    out: dict[str, int] = {}
    for option, cls in data.items():
        if isinstance(cls, bool) or not isinstance(cls, int) or cls < 0:
            raise ValueError(f"{where}: option {option!r} has class {cls!r}, not an integer >= 0")
        out[str(option)] = cls
    return out


def option_map_differences(
    selected: Mapping[str, int], default: Mapping[str, int]
) -> list[tuple[str, int, int]]:
    """``(option, class in selected, class in default)`` for every option both maps cover
    with different classes, sorted by option."""
    return [(o, selected[o], default[o]) for o in sorted(selected.keys() & default.keys())
            if selected[o] != default[o]]
