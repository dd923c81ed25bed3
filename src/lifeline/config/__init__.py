"""Configuration: the schema (one validated object) and the loader."""

from lifeline.config.load import ConfigError, load_config, parse_config
from lifeline.config.schema import Config, default_config

__all__ = ["Config", "ConfigError", "default_config", "load_config", "parse_config"]
