"""Configuration: the schema (one validated object) and the loader."""

from lifeline.config.load import load_config, parse_config
from lifeline.config.schema import Config, default_config
from lifeline.errors import ConfigError

__all__ = ["Config", "ConfigError", "default_config", "load_config", "parse_config"]
