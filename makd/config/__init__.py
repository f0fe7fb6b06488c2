"""The project's one yacs configuration tree and its loader."""

from makd.config.defaults import MethodNotImplementedError, get_cfg, load_cfg
from makd.errors import ConfigError

__all__ = ["ConfigError", "MethodNotImplementedError", "get_cfg", "load_cfg"]
