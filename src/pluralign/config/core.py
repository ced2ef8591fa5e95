"""Dataclass configs: YAML in and out, ``--key value`` overrides, typed checks.

One dataclass serves the Python API and the command line. A config is built
in three layers: the dataclass defaults, then a YAML file, then command-line
overrides (``--lr 1e-5``, ``--model.lora_r 8``, ``--key=value``). Every value
is checked against the field's type hint, and every error names where the bad
value came from (file and line, or the command-line option) and the field.
Nested dataclass fields are addressed with dotted keys.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from pluralign.registry import did_you_mean

C = TypeVar("C")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
#: The words a boolean field reads (case aside).
BOOLEAN_WORDS = frozenset(_TRUE | _FALSE)


class ConfigError(ValueError):
    """A config value or key is wrong; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class _Value:
    """A raw value with the place it came from, for error messages."""

    value: Any
    where: str
    #: For a YAML mapping: its entries, each with its own line (a nested config's errors
    #: then point at the nested key, not at its parent).
    children: dict[str, _Value] | None = None
    #: A command-line option given more than once: ``value`` is the list of its values.
    repeated: bool = False


# --------------------------------------------------------------------------- types


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) is None and isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce_scalar(value: Any, tp: type, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(number):  # YAML's .nan / .inf parse as floats; no setting wants one
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (list, dict, tuple)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Path or (isinstance(tp, type) and issubclass(tp, Path)):
        return Path(str(value))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value in (member, member.value, member.name):
                return member
        choices = [str(m.value) for m in tp]
        raise ConfigError(
            f"{where}: {value!r} is not one of {choices}.{did_you_mean(str(value), choices)}"
        )
    if isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _parse_text(value: Any) -> Any:
    """Command-line values arrive as text: read them as YAML scalars/lists."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _coerce_sequence(value: Any, tp: Any, where: str) -> Any:
    parsed = _parse_text(value)
    if isinstance(parsed, str):  # "a,b,c" on the command line
        parsed = [part.strip() for part in parsed.split(",") if part.strip()]
    if not isinstance(parsed, (list, tuple)):
        parsed = [parsed]
    args = typing.get_args(tp)
    item_tp = args[0] if args else Any  # list[X] and tuple[X, ...] alike
    items = [coerce(v, item_tp, f"{where} item {i}") for i, v in enumerate(parsed)]
    origin = typing.get_origin(tp) or tp
    container = origin if origin in (tuple, set, frozenset) else list
    return container(items)


def _coerce_mapping(value: Any, tp: Any, where: str) -> dict:
    parsed = _parse_text(value)
    if not isinstance(parsed, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    key_tp, val_tp = typing.get_args(tp) or (Any, Any)
    return {coerce(k, key_tp, where): coerce(v, val_tp, f"{where}.{k}") for k, v in parsed.items()}


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` to type hint ``tp`` or raise :class:`ConfigError`."""
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        members = typing.get_args(tp)
        if value is None or (type(None) in members and str(value).lower() in {"none", "null"}):
            if type(None) in members:
                return None
            raise ConfigError(f"{where}: a value is required (got None)")
        errors = []
        for member in members:
            if member is type(None):
                continue
            try:
                return coerce(value, member, where)
            except ConfigError as exc:
                errors.append(str(exc).removeprefix(f"{where}: "))
        raise ConfigError(f"{where}: {value!r} does not fit {_type_name(tp)} ({'; '.join(errors)})")
    if value is None:
        raise ConfigError(f"{where}: a value is required (got None)")
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            try:
                if coerce(value, type(choice), where) == choice:
                    return choice
            except ConfigError:
                continue
        names = [str(c) for c in choices]
        raise ConfigError(
            f"{where}: {value!r} is not one of {names}.{did_you_mean(str(value), names)}"
        )
    if origin in (list, tuple, Sequence, set, frozenset) or tp in (list, tuple):
        return _coerce_sequence(value, tp, where)
    if origin in (dict, Mapping) or tp is dict:
        return _coerce_mapping(value, tp, where)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, {k: _Value(v, f"{where}.{k}") for k, v in value.items()}, where)
    if tp is not str and not (isinstance(tp, type) and issubclass(tp, (Path, enum.Enum))):
        value = _parse_text(value)
    return _coerce_scalar(value, tp, where)


# ----------------------------------------------------------------------- building


def reject_non_finite(config: Any) -> None:
    """Raise ``ValueError`` naming the first float field of ``config`` that is NaN or infinite
    (the Python API's counterpart of the YAML/CLI check; call it from ``__post_init__``)."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{item.name}: must be a finite number, got {value}")


def config_fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """The init fields of dataclass ``cls`` with their resolved type hints."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints.get(f.name, Any)) for f in dataclasses.fields(cls) if f.init}


def _nest(flat: Mapping[str, _Value]) -> dict[str, Any]:
    """{"a.b": v} -> {"a": {"b": v}} (values stay wrapped)."""
    nested: dict[str, Any] = {}
    for key, val in flat.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})
            if isinstance(nested[head], _Value):
                nested[head] = {}
            nested[head][rest] = val
        else:
            nested[head] = val
    return nested


def _is_sequence(tp: Any) -> bool:
    members = typing.get_args(tp) if _is_union(tp) else (tp,)
    return any((typing.get_origin(m) or m) in (list, tuple, set, frozenset, Sequence)
               for m in members)


def _pass_through(cls: type, key: str, raw: Any, where: str) -> Any:
    """A key that is not a field of ``cls``: the coerced value, for a config whose
    ``config_pass_through`` field collects another library's options (TrainConfig's
    ``training_args``: every TrainingArguments field), else a "no field" error."""
    origin = raw.where if isinstance(raw, _Value) else where
    known = list(config_fields(cls))
    types_of = getattr(cls, "pass_through_types", None)
    options = types_of() if types_of is not None else {}
    if key not in options:
        raise ConfigError(f"{origin}: {cls.__name__} has no field {key!r}."
                          f"{did_you_mean(key, [*known, *options])}")
    value = raw.value if isinstance(raw, _Value) else raw
    return coerce(value, options[key], f"{origin} (field {key!r})")


def field_default(field: dataclasses.Field) -> Any:
    """What a field holds when not given: its default, a fresh ``default_factory()`` value,
    or ``dataclasses.MISSING`` for a required field."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _build(cls: type[C], values: Mapping[str, Any], where: str, base: Any = None) -> C:
    """``cls`` from ``values``; fields not given keep ``base``'s values when there is a base
    (a nested config's own default: ``--model.model X`` must not reset ``model.lora_r``)."""
    fields = config_fields(cls)
    kwargs: dict[str, Any] = {}
    passed: dict[str, Any] = {}
    for key, raw in _nest(values).items():
        if key not in fields:
            passed[key] = _pass_through(cls, key, raw, where)
            continue
        _, tp = fields[key]
        if isinstance(raw, _Value) and raw.repeated and not _is_sequence(tp):
            raise ConfigError(f"{raw.where}: given more than once; {key!r} takes one value")
        if isinstance(raw, _Value) and raw.children is not None and dataclasses.is_dataclass(tp):
            raw = raw.children  # a YAML mapping for a nested config: keep each key's line
        if isinstance(raw, dict):  # dotted keys addressing a nested dataclass
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"{where}: field {key!r} of {cls.__name__} is not nested")
            default = getattr(base, key) if base is not None else field_default(fields[key][0])
            kwargs[key] = _build(tp, raw, f"{where}.{key}",
                                 default if dataclasses.is_dataclass(default) else None)
        else:
            kwargs[key] = coerce(raw.value, tp, f"{raw.where} (field {key!r})")
    if passed:  # after the loop: an explicit pass-through mapping may come first or last
        name = cls.config_pass_through  # type: ignore[attr-defined]
        given = kwargs.get(name, getattr(base, name, None) if base is not None else None)
        kwargs[name] = {**(given or {}), **passed}
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid {cls.__name__}: {exc}") from exc


def _yaml_key_lines(node: yaml.Node, prefix: str, path: str, out: dict[str, int]) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"{path}:{line}: key {key!r} repeats the one on line {seen[key]}")
        seen[key] = line
        out[key] = line
        _yaml_key_lines(value_node, f"{key}.", path, out)


def read_yaml(path: str | Path) -> dict[str, _Value]:
    """Read a YAML mapping into flat dotted keys, each with ``file:line``.

    Nested mappings are kept whole under their key (a field may be a dict);
    the dotted lines are only used to point errors at the right line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of field: value")
    lines: dict[str, int] = {}
    _yaml_key_lines(root, "", str(path), lines)
    return {str(k): _located(v, str(k), path, lines) for k, v in data.items()}


def _located(value: Any, key: str, path: Path, lines: dict[str, int]) -> _Value:
    children = ({str(k): _located(v, f"{key}.{k}", path, lines) for k, v in value.items()}
                if isinstance(value, dict) else None)
    return _Value(value, f"{path}:{lines.get(key, 1)}", children)


def parse_overrides(args: Sequence[str]) -> dict[str, _Value]:
    """Parse ``--key value`` / ``--key=value`` / ``--flag`` into raw values."""
    out: dict[str, _Value] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(
                f"command line: expected an option like --key value, got {token!r}"
            )
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"  # a bare --flag switches a boolean on
        if key in out:  # a repeated option: a list field takes every value given
            out[key] = _Value([*_values_of(out[key]), value], out[key].where, repeated=True)
        else:
            out[key] = _Value(value, f"command line --{key}")
        i += 1
    return out


def _aliased(cls: type, values: Mapping[str, _Value]) -> dict[str, _Value]:
    """Keys under their field's name: ``config_aliases`` maps an older or shorter name
    (EvalConfig's ``out``, a builder's ``llm_backend``) to a field's dotted name."""
    aliases: Mapping[str, str] = getattr(cls, "config_aliases", {})
    out: dict[str, _Value] = {}
    for key, val in values.items():
        head, dot, rest = key.partition(".")
        name = aliases.get(head, head) + dot + rest
        if name in out:  # `--model a --models b`: one repeated option (a list field's items)
            val = _Value([*_values_of(out[name]), *_values_of(val)], out[name].where,
                         repeated=True)
        out[name] = val
    return out


def _values_of(val: _Value) -> list[Any]:
    return list(val.value) if val.repeated else [val.value]


def _merge(values: dict[str, _Value], key: str, val: _Value) -> None:
    """Set ``key``; a dotted key inside a field given as a whole mapping keeps the mapping's
    other keys (``--model.lora_r 8`` over a YAML ``model:`` block)."""
    head = key.split(".")[0]
    if head in values and "." in key and isinstance(values[head].value, dict):
        nested = values.pop(head)
        for sub, sub_val in nested.value.items():
            child = nested.children.get(sub) if nested.children else None
            values.setdefault(f"{head}.{sub}", child or _Value(sub_val, nested.where))
    values[key] = val


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    *,
    preset: Mapping[str, Any] | None = None,
) -> C:
    """Build ``cls`` from defaults, then ``preset`` (dotted keys to values), then the YAML
    file ``path``, then ``overrides``.

    ``overrides`` is either command-line tokens (``["--lr", "1e-5"]``) or a
    mapping of dotted keys to values.
    """
    values: dict[str, _Value] = {}
    for key, value in (preset or {}).items():
        _merge(values, key, _Value(value, f"preset {key!r}"))
    for key, val in _aliased(cls, read_yaml(path) if path is not None else {}).items():
        _merge(values, key, val)
    if isinstance(overrides, Mapping):
        extra = {k: _Value(v, f"override {k!r}") for k, v in overrides.items()}
    else:
        extra = parse_overrides(list(overrides))
    for key, val in _aliased(cls, extra).items():
        _merge(values, key, val)
    where = str(path) if path is not None else "config"
    return _build(cls, values, where)


# ------------------------------------------------------------------------- output


def to_plain(obj: Any) -> Any:
    """Turn a config (or any nested value in it) into YAML-safe builtins."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init
        }
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_plain(config), sort_keys=False, allow_unicode=True)


def save_config(config: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dump_yaml(config), encoding="utf-8")
    tmp.replace(path)
    return path


class YamlConfig:
    """Mixin giving a config dataclass ``load`` (YAML file plus overrides), ``to_dict``,
    ``to_yaml`` and ``save``."""

    @classmethod
    def load(
        cls: type[C],
        path: str | Path | None = None,
        overrides: Sequence[str] | Mapping[str, Any] = (),
    ) -> C:
        """The config from ``path`` (YAML, optional) with ``overrides`` applied on top: CLI
        words (``["--lr", "1e-4"]``) or a mapping of dotted names to values."""
        return load_config(cls, path, overrides)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def to_yaml(self) -> str:
        return dump_yaml(self)

    def save(self, path: str | Path) -> Path:
        return save_config(self, path)
