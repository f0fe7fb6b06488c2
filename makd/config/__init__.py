"""The project's one yacs configuration tree and its loader."""

from makd.config.defaults import ConfigError, MethodNotImplementedError, get_cfg, load_cfg

__all__ = ["ConfigError", "MethodNotImplementedError", "get_cfg", "load_cfg"]
