"""The contract every stage-2 backend meets: images x questions -> P(yes) [n_images, Q], and the BACKENDS registry.

`prepare` holds the CPU work for one image (tiling, encoding) so the extraction loop can run it in loader
threads while the model works; `score` accepts prepared items or plain PIL images. A NaN in the result means
the backend could not read a Yes/No probability for that cell (it is reported, never filled in).
A backend of the command (`--backend NAME`) is a module of makd.mllm.backends registered in BACKENDS: its own
options and how it builds its Scorer from the parsed arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from makd.registry import Registry


class Scorer(Protocol):
    def prepare(self, image: Image.Image) -> Any:
        """CPU-side work for one image (thread-safe); the result can be passed to `score`."""

    def score(self, images: Sequence[Any], questions: Sequence[str]) -> np.ndarray:
        """P(yes) for every image and question, float64 [len(images), len(questions)], NaN = no answer."""

    def describe(self) -> dict:
        """What made the numbers (model, revision, template, tokens, tiling, dtype, ...), for the sidecar."""


class Backend(Protocol):
    """One `--backend` of the stage-2 command (registered in BACKENDS under the names it answers to)."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The backend's own options (an argument group), added to the command's parser."""

    @staticmethod
    def build(args: argparse.Namespace, name: str, answer_suffix: str) -> Scorer:
        """The scorer for the parsed arguments (`name`: the --backend it was chosen by; loads the model in-process)."""


# --backend name -> Backend; each module of makd.mllm.backends registers its backend here.
BACKENDS: Registry[type[Backend]] = Registry("--backend")
