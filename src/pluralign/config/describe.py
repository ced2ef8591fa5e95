"""What a config class offers: its fields with their types, defaults and help (``--fields``),
and the fields that lack help (a test keeps that list empty)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from typing import Any

from pluralign.config.core import _type_name, config_fields, field_default, to_plain


def missing_help(cls: type, _seen: set[type] | None = None) -> list[str]:
    """Names of fields (recursively) without ``metadata={"help": ...}``."""
    seen = _seen if _seen is not None else set()
    if cls in seen:
        return []
    seen.add(cls)
    missing = []
    for name, (field, tp) in config_fields(cls).items():
        if not str(field.metadata.get("help", "")).strip():
            missing.append(f"{cls.__name__}.{name}")
        for member in typing.get_args(tp) or (tp,):
            if dataclasses.is_dataclass(member):
                missing.extend(missing_help(member, seen))
    return missing


def describe_fields(cls: type, prefix: str = "", defaults: Any = None
                    ) -> Iterable[tuple[str, str, str, str]]:
    """(key, type, default, help) for each field, nested ones as dotted keys. A nested
    field's defaults are those of its own default value (what a run really uses), not its
    class's: ``model.lora_r`` of TrainConfig is 8, though ModelConfig's is 0."""
    for name, (field, tp) in config_fields(cls).items():
        value = getattr(defaults, name) if defaults is not None else field_default(field)
        if dataclasses.is_dataclass(tp):
            yield from describe_fields(tp, f"{prefix}{name}.",
                                       value if dataclasses.is_dataclass(value) else None)
            continue
        default = "(required)" if value is dataclasses.MISSING else repr(to_plain(value))
        yield f"{prefix}{name}", _type_name(tp), default, str(field.metadata.get("help", ""))
