"""Config dataclasses: YAML in and out, command-line overrides, validation."""

from pluralign.config.core import (
    ConfigError,
    YamlConfig,
    coerce,
    config_fields,
    dump_yaml,
    load_config,
    parse_overrides,
    read_yaml,
    reject_non_finite,
    save_config,
    to_plain,
)
from pluralign.config.describe import describe_fields, missing_help

__all__ = [
    "ConfigError",
    "YamlConfig",
    "coerce",
    "config_fields",
    "describe_fields",
    "dump_yaml",
    "load_config",
    "missing_help",
    "parse_overrides",
    "read_yaml",
    "reject_non_finite",
    "save_config",
    "to_plain",
]
