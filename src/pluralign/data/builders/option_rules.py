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
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

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


def load_option_map(path: str | Path | None = None) -> dict[str, int]:
    """An option -> class map from a JSON file; ``None`` loads the project's default map."""
    if path is None:
        text = resources.files("pluralign.data").joinpath(DEFAULT_MAP_RESOURCE).read_text(
            encoding="utf-8"
        )
        where = f"pluralign/data/{DEFAULT_MAP_RESOURCE}"
    else:
        text = Path(path).read_text(encoding="utf-8")
        where = str(path)
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: an option map must be a JSON object option -> class id")
    out: dict[str, int] = {}
    for option, cls in data.items():
        if isinstance(cls, bool) or not isinstance(cls, int) or cls < 0:
            raise ValueError(f"{where}: option {option!r} has class {cls!r}, not an integer >= 0")
        out[str(option)] = cls
    return out
