"""The contract every stage-2 backend meets: images x questions -> P(yes) [n_images, Q].

`prepare` holds the CPU work for one image (tiling, encoding) so the extraction loop can run it in loader
threads while the model works; `score` accepts prepared items or plain PIL images. A NaN in the result means
the backend could not read a Yes/No probability for that cell (it is reported, never filled in).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image


class Scorer(Protocol):
    def prepare(self, image: Image.Image) -> Any:
        """CPU-side work for one image (thread-safe); the result can be passed to `score`."""

    def score(self, images: Sequence[Any], questions: Sequence[str]) -> np.ndarray:
        """P(yes) for every image and question, float64 [len(images), len(questions)], NaN = no answer."""

    def describe(self) -> dict:
        """What made the numbers (model, revision, template, tokens, tiling, dtype, ...), for the sidecar."""
