"""The backends of the stage-2 command (`--backend`). Every module of this package is imported here, so each
registers itself in makd.mllm.scorer.BACKENDS.

Adding a backend is one new module (a registered Backend: its options and how it builds its Scorer) plus its
tests; nothing else lists backends. Modules import their model code when they build (a server backend needs
no torch).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

from makd.mllm.scorer import BACKENDS, Scorer

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def backend_names() -> list[str]:
    """The --backend choices, in the order the backends registered (makd's own: auto, hf, remote, openai)."""
    return list(BACKENDS)


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Every backend's own options, once per backend (a backend registered under several names adds them once)."""
    for backend in dict.fromkeys(BACKENDS.get(name) for name in BACKENDS):
        backend.add_arguments(parser)


def build_scorer(args: argparse.Namespace, name: str, answer_suffix: str) -> Scorer:
    """The scorer of backend `name` for the parsed arguments."""
    return BACKENDS.get(name).build(args, name, answer_suffix)
