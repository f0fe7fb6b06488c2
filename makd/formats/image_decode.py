"""Decoding an image file into the 8-bit RGB every model input is made from: one function for every path.

The training loaders, the uint8 cache and the start-of-run image check all call read_rgb, so an
image decodes to the same pixels wherever it is read, and every failure is one ImageLoadError line.
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from makd.errors import MakdError

# How DataLoader workers hand an exception back: torch rebuilds it in the main process as
# `type(err)("Caught <Name> in DataLoader worker process <n>.\nOriginal Traceback ...")`.
_WORKER_WRAPPER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback", re.DOTALL)


class ImageLoadError(MakdError, ValueError):
    """An image file is missing, unreadable, truncated or not an image.

    Raised in a DataLoader worker it is rebuilt by torch from a message holding the worker's whole
    traceback; the constructor keeps only the original one-line message, so the command still
    prints one line.
    """

    def __init__(self, message: str = "") -> None:
        if isinstance(message, str) and _WORKER_WRAPPER.match(message):
            last = [line for line in message.splitlines() if line.strip()][-1]
            message = last.split(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


# Modes that hold one channel of more than 8 bits: PIL's convert("RGB") clips them at 255 (a 16-bit
# PNG becomes almost all white), so they are rescaled by their bit depth instead.
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _bit_depth(image: Image.Image, values: np.ndarray) -> int:
    """Bits per sample of a wide grey image: from the file when it says (I;16 modes, PNG, TIFF BitsPerSample),
    else the smallest of 8/16/32 bits that holds the largest value (an "I" image made from 8-bit data stays 8-bit)."""
    if image.mode.startswith("I;16") or image.format == "PNG":  # PNG has no deeper grey than 16 bits
        return 16
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # TIFF BitsPerSample
    if bits:
        return int(bits[0] if isinstance(bits, (tuple, list)) else bits)
    top = float(values.max()) if values.size else 0.0
    return next((depth for depth in (8, 16) if top < 2**depth), 32)


def to_rgb8(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB, whatever its mode.

    - I;16*, I: grey values scaled by the image's bit depth (v * 255 / (2**bits - 1), rounded); negatives -> 0.
    - F (float): [0, 1] when every value is in [0, 1], else taken as 0..255; clipped.
    - P with transparency, PA, LA, RGBA: colours kept, alpha dropped (as PIL and the MLLM loaders do).
    - L, 1, CMYK, YCbCr, ...: PIL's conversion (CMYK naive, without a colour profile).
    """
    mode = image.mode
    if mode in _WIDE_GREY_MODES:
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            finite = values[np.isfinite(values)]
            top = 1.0 if finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0) else 255.0
        else:
            top = float(2 ** _bit_depth(image, values) - 1)
        grey = np.clip(np.rint(np.nan_to_num(values) * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2))  # uint8 [H, W, 3] -> RGB
    if mode == "PA" or (mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")  # PIL warns when a palette with transparency goes straight to RGB
    return image.convert("RGB")


def _reason(err: BaseException, path: str | os.PathLike) -> str:
    """What is wrong with an image file, in words a user acts on (PIL's own messages say it poorly)."""
    if isinstance(err, UnidentifiedImageError):
        size = os.path.getsize(path) if os.path.isfile(path) else -1
        if size == 0:
            return "empty file (0 bytes), not an image"
        return f"not an image (no image format recognises its {size} bytes); replace or remove the file"
    if isinstance(err, FileNotFoundError):
        return "file not found (moved or deleted after the folder was listed?)"
    if isinstance(err, PermissionError):
        return "permission denied; make it readable (chmod a+r)"
    if isinstance(err, IsADirectoryError):
        return "is a folder, not an image file"
    said = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
    if "truncated" in said.lower() or "broken data stream" in said.lower():
        return f"truncated or corrupt ({said}); re-copy or remove the file"
    if isinstance(err, Image.DecompressionBombError):
        return f"too large ({said})"
    return f"corrupt ({said})"


def read_rgb(path: str | os.PathLike, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode `path` fully into an 8-bit RGB PIL image (to_rgb8); any failure is an ImageLoadError naming the file.

    `draft_size` lets JPEG decode at a reduced scale (at least that size), which still reads the whole
    stream: the image check uses it to find truncated files quickly.
    """
    try:
        with Image.open(path) as image:
            if draft_size is not None:
                image.draft("RGB", draft_size)
            image.load()  # the full decode: truncation fails here
            return to_rgb8(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"cannot read image {path}: {_reason(err, path)}") from None
