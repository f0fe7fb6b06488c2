"""Photo-like class folders: a made-up dataset that looks like a small folder of real photos, for the quickstart.

Unlike the demo's 32-px shapes (makd.demo.classification), these are what `tools/init_config.py` meets in a
user's folder: JPEG (and some PNG) files of varied sizes and aspect ratios (4:3, 3:4, 1:1, 3:2, 16:9), each a
scene with a sky gradient, a textured ground of multi-scale noise at a random horizon, and one object of its
class: a class fixes the object's silhouette (`SILHOUETTES`), its palette and its surface pattern; the position,
scale, rotation, colour jitter, lighting, a soft shadow, blur, sensor noise, a vignette and the JPEG quality vary
per image. Seeded per image: the same seed writes the same bytes. No teacher comes with it: that is what stage 2
is for (`--model tiny` to try the plumbing).
"""

from __future__ import annotations

import colorsys
import math
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# name -> (silhouette, hue of the object in [0, 1), pattern)
CLASSES = {
    "apple": ("round", 0.0, "speckled"),
    "balloon": ("teardrop", 0.58, "plain"),
    "lantern": ("rounded_box", 0.1, "ribbed"),
    "mushroom": ("cap", 0.07, "spotted"),
    "sailboat": ("sail", 0.62, "striped"),
    "cactus": ("column", 0.33, "ribbed"),
    "kite": ("diamond", 0.85, "striped"),
    "shell": ("fan", 0.12, "ribbed"),
}
ASPECTS = ((4, 3), (3, 4), (1, 1), (3, 2), (16, 9))


def _smooth_noise(rng: np.random.Generator, width: int, height: int, scales=(4, 12, 40)) -> np.ndarray:
    """Noise in [0, 1] [H, W]: random grids of a few cells upsampled bicubically and summed (coarse to fine)."""
    total = np.zeros((height, width), dtype=np.float32)
    weight = 1.0
    for cells in scales:
        grid = rng.random((max(2, cells * height // max(width, height)), max(2, cells * width // max(width, height))))
        layer = Image.fromarray((grid * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
        total += weight * np.asarray(layer, dtype=np.float32) / 255.0
        weight /= 2
    return (total - total.min()) / max(1e-6, float(total.max() - total.min()))


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, min(max(saturation, 0), 1), min(max(value, 0), 1))
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Sky gradient above a textured ground, float [H, W, 3] in [0, 255]."""
    horizon = int(height * rng.uniform(0.35, 0.75))
    sky_top = np.array(_rgb(rng.uniform(0.52, 0.65), rng.uniform(0.2, 0.6), rng.uniform(0.6, 1.0)), np.float32)
    sky_low = np.array(_rgb(rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.3), rng.uniform(0.75, 1.0)), np.float32)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = sky_top * (1 - t) + sky_low * t + np.zeros((height, width, 3), np.float32)
    ground = np.array(_rgb(rng.uniform(0.05, 0.35), rng.uniform(0.2, 0.7), rng.uniform(0.25, 0.7)), np.float32)
    texture = _smooth_noise(rng, width, height - horizon, scales=(6, 20, 60))[..., None]
    image[horizon:] = ground * (0.55 + 0.7 * texture)
    clouds = _smooth_noise(rng, width, horizon, scales=(3, 9))[..., None] if horizon > 1 else 0
    image[:horizon] += 60 * np.clip(clouds - 0.55, 0, None)
    return image


def _silhouette(draw: ImageDraw.ImageDraw, kind: str, box: tuple[float, float, float, float]) -> None:
    """Fill the class's silhouette (white) into a mask, inside `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    w, h, cx = x1 - x0, y1 - y0, (x0 + x1) / 2
    if kind == "round":
        draw.ellipse(box, fill=255)
        draw.rectangle((cx - w * 0.04, y0 - h * 0.12, cx + w * 0.04, y0 + h * 0.08), fill=255)  # a stem
    elif kind == "teardrop":
        draw.ellipse((x0, y0, x1, y0 + h * 0.85), fill=255)
        draw.polygon([(cx - w * 0.12, y0 + h * 0.8), (cx + w * 0.12, y0 + h * 0.8), (cx, y1)], fill=255)
    elif kind == "rounded_box":
        draw.rounded_rectangle((x0 + w * 0.1, y0 + h * 0.12, x1 - w * 0.1, y1), radius=w * 0.2, fill=255)
        draw.rectangle((cx - w * 0.15, y0, cx + w * 0.15, y0 + h * 0.14), fill=255)
    elif kind == "cap":
        draw.pieslice((x0, y0, x1, y0 + h * 1.1), 180, 360, fill=255)
        draw.rectangle((cx - w * 0.12, y0 + h * 0.5, cx + w * 0.12, y1), fill=255)
    elif kind == "sail":
        draw.polygon([(cx, y0), (cx, y0 + h * 0.75), (x1, y0 + h * 0.72)], fill=255)
        draw.polygon([(x0, y0 + h * 0.78), (x1, y0 + h * 0.78), (x1 - w * 0.15, y1), (x0 + w * 0.15, y1)], fill=255)
    elif kind == "column":
        draw.rounded_rectangle((cx - w * 0.15, y0, cx + w * 0.15, y1), radius=w * 0.15, fill=255)
        draw.rounded_rectangle((x0, y0 + h * 0.3, x0 + w * 0.25, y0 + h * 0.6), radius=w * 0.1, fill=255)
        draw.rounded_rectangle((x1 - w * 0.25, y0 + h * 0.2, x1, y0 + h * 0.5), radius=w * 0.1, fill=255)
    elif kind == "diamond":
        draw.polygon([(cx, y0), (x1, y0 + h * 0.4), (cx, y1 - h * 0.2), (x0, y0 + h * 0.4)], fill=255)
        draw.line([(cx, y1 - h * 0.2), (cx + w * 0.1, y1)], fill=255, width=max(1, int(w * 0.03)))
    elif kind == "fan":
        draw.pieslice((x0, y0, x1, y1 + h * 0.6), 200, 340, fill=255)
        draw.polygon([(cx - w * 0.1, y1 - h * 0.1), (cx + w * 0.1, y1 - h * 0.1), (cx, y1)], fill=255)


def _pattern(rng: np.random.Generator, kind: str, width: int, height: int, scale: float) -> np.ndarray:
    """A brightness factor [H, W] around 1 for the object's surface."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = max(3.0, scale / rng.uniform(5, 8))
    angle = rng.uniform(0, math.pi)
    if kind == "striped":
        return 1 + 0.35 * np.sign(np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period))
    if kind == "ribbed":
        return 1 + 0.2 * np.sin(xx * 2 * math.pi / period)
    if kind in ("spotted", "speckled"):
        field = np.ones((height, width), np.float32)
        count = int(rng.integers(6, 14)) if kind == "spotted" else int(rng.integers(40, 90))
        radius = period * (0.5 if kind == "spotted" else 0.15)
        for _ in range(count):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            field[(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] = 1.6 if kind == "spotted" else 0.6
        return field
    return np.ones((height, width), np.float32)


def draw_photo(name: str, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """One photo-like RGB image of class `name` at width x height."""
    silhouette, hue, pattern = CLASSES[name]
    image = _background(rng, width, height)
    side = min(width, height) * rng.uniform(0.45, 0.8)
    cx = rng.uniform(side / 2, width - side / 2)
    cy = rng.uniform(side / 2, height - side / 2)
    mask = Image.new("L", (width, height), 0)
    _silhouette(ImageDraw.Draw(mask), silhouette, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    mask = mask.rotate(rng.uniform(-25, 25), resample=Image.BICUBIC, center=(cx, cy))
    shadow = np.asarray(mask.filter(ImageFilter.GaussianBlur(side * 0.06)), np.float32) / 255.0
    shift = int(side * 0.06)
    shadow = np.roll(np.roll(shadow, shift, axis=0), shift, axis=1)
    image *= (1 - 0.35 * shadow)[..., None]
    colour = np.array(_rgb(hue + rng.normal(0, 0.025), rng.uniform(0.55, 0.95), rng.uniform(0.5, 0.95)), np.float32)
    surface = colour * _pattern(rng, pattern, width, height, side)[..., None]
    light = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(1.0, 1.25), width, dtype=np.float32)[None, :, None]
    alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.8)), np.float32)[..., None] / 255.0
    image = image * (1 - alpha) + surface * light * alpha
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    vignette = 1 - 0.35 * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2) * 2
    image = image * vignette[..., None] * rng.uniform(0.8, 1.15) + rng.normal(0, rng.uniform(2, 7), image.shape)
    photo = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    return photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.9)))


def write_photo_folders(
    out_dir: str | os.PathLike,
    *,
    classes: int = 5,
    train_per_class: int = 40,
    test_per_class: int = 10,
    min_side: int = 96,
    max_side: int = 160,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Write out_dir/train/<class>/*.jpg|png and out_dir/test/<class>/... ; returns counts and the size range."""
    out = Path(out_dir)
    if not 2 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be between 2 and {len(CLASSES)}, got {classes}")
    if not 8 <= min_side <= max_side:
        raise ValueError(f"need 8 <= min_side <= max_side, got {min_side} and {max_side}")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out)
    names = list(CLASSES)[:classes]
    sizes = []
    for split, count, offset in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        for label, name in enumerate(names):
            folder = out / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                rng = np.random.default_rng([seed, offset, label, index])
                short = int(rng.integers(min_side, max_side + 1))
                a, b = ASPECTS[int(rng.integers(len(ASPECTS)))]
                width, height = (short * a // b, short) if a >= b else (short, short * b // a)
                photo = draw_photo(name, width, height, rng)
                if rng.random() < 0.1:
                    photo.save(folder / f"{name}_{index:04d}.png")
                else:
                    photo.save(folder / f"{name}_{index:04d}.jpg", quality=int(rng.integers(70, 96)))
                sizes.append((width, height))
    return {"out_dir": str(out), "classes": names, "num_train": classes * train_per_class,
            "num_test": classes * test_per_class, "sizes": sizes}  # fmt: skip
