"""`python tools/export_images.py CONFIG OUT_DIR`: a split's images as PNGs named by their ids (makd.data.export)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from makd.config.defaults import load_cfg
from makd.data.export import export_images
from makd.data.layouts import build_image_indexes
from makd.errors import MakdError

DESCRIPTION = "Write a dataset split's images as PNG files named by their ids, so stage 2 can run on any layout."


def main(argv: Sequence[str] | None = None) -> int:
    """tools/export_images.py CONFIG OUT_DIR [--split train|test] [KEY VALUE ...]"""
    parser = argparse.ArgumentParser(prog="export_images.py", description=DESCRIPTION)
    parser.add_argument("config", help="training config (YAML) whose DATASET.* names the data")
    parser.add_argument("out_dir", help="folder to write <id>.png into (then run stage 2 with --images OUT_DIR)")
    parser.add_argument("--split", choices=("train", "test"), default="train", help="which split to export")
    parser.add_argument("opts", nargs="*", help="config overrides as KEY VALUE pairs, e.g. DATASET.ROOT /data")
    args = parser.parse_args(argv)
    try:
        cfg = load_cfg(args.config, args.opts)
        train, test = build_image_indexes(cfg)
        index = train if args.split == "train" else test
        written = export_images(index, args.out_dir, progress=True)
    except MakdError as err:
        parser.exit(2, f"export_images.py: error: {err}\n")
    print(f"{args.out_dir}: wrote {written} new PNGs ({len(index) - written} already there) for {index.source}")
    return 0
