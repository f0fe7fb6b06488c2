"""`python tools/init_config.py DATA_DIR --out my.yaml`: a starting config for a folder of images.

DATA_DIR holds `train/<class>/<image>` and `test/<class>/<image>`. The command counts the classes and images,
measures a bounded sample of the training images (sizes, grey or colour, per-channel mean and std;
makd.data.folder_survey), picks the recipe, input size, student and solver that fit
(makd.config.starting_config), and writes a commented YAML, each value with its reason, which it then loads with
the trainer's loader to prove it loads unchanged; beside it, `<out stem>_study.yaml`, the study of the CE
baseline, MaKD and the random-targets control. Nothing is written when any check fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import makd
from makd.atomic_files import atomic_write_text, check_output_location
from makd.config import load_cfg
from makd.config.starting_config import DEFAULT_EPOCHS, DataFacts, choose_settings, render_config, render_study
from makd.data.folder_survey import DEFAULT_SAMPLE, survey_class_folders
from makd.errors import ConfigError, run_command

PROG = "init_config.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect a folder of images (DATA_DIR/train/<class>/..., DATA_DIR/test/<class>/...) and write a "
        "commented starting config for it, plus a study of the baseline, MaKD and the random-targets control.",
        epilog="example: python tools/init_config.py data/mine --out mine.yaml",
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", help="the folder holding train/ and test/")
    parser.add_argument("--out", required=True, help="config file to write (.yaml)")
    parser.add_argument("--study", default=None, help="study file to write (default: <out stem>_study.yaml)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="SOLVER.EPOCHS (default %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="the study's seeds, comma separated (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="DATASET.IMAGE_SIZE in px (default: chosen from the images' sizes)")  # fmt: skip
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE,
                        help="training images measured for sizes and MEAN/STD (default %(default)s)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace --out and --study when they exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: give at least one seed, each once")
    return seeds


def _outputs(args: argparse.Namespace) -> tuple[Path, Path]:
    out = Path(args.out)
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--out {out}: a config file ends in .yaml")
    study = Path(args.study) if args.study else out.with_name(f"{out.stem}_study{out.suffix}")
    for path, flag in ((out, "--out"), (study, "--study")):
        if path.exists() and not args.overwrite:
            raise ConfigError(f"{flag} {path} exists; pass --overwrite to replace it")
        check_output_location(path, flag)
    return out, study


def _per_class(counts: dict[str, int]) -> str:
    low, high = min(counts.values()), max(counts.values())
    return str(low) if low == high else f"{low} to {high}"


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds = _seeds(args.seeds)
    out, study_path = _outputs(args)
    survey = survey_class_folders(args.data_dir, sample=args.sample, progress=not args.no_progress)
    percentiles = survey.short_side_percentiles()
    facts = DataFacts(
        data_dir=Path(args.data_dir).as_posix(),
        class_names=survey.classes,
        num_train=survey.num_train,
        num_test=survey.num_test,
        min_train_per_class=min(survey.train_counts.values()),
        short_side_percentiles=percentiles,
        size_range=survey.size_range(),
        sampled=len(survey.sample_sizes),
        grey=survey.grey,
        mean=survey.mean,
        std=survey.std,
    )
    chosen = choose_settings(facts, epochs=args.epochs, image_size=args.image_size)
    test_classes = len(survey.test_counts)
    header = [
        f"Starting config for {facts.data_dir}, written by tools/init_config.py (makd {makd.__version__}) on "
        f"{dt.date.today().isoformat()}.",
        f"{len(survey.classes)} classes; {survey.num_train} training images ({_per_class(survey.train_counts)} per "
        f"class), {survey.num_test} test images"
        f"{'' if test_classes == len(survey.classes) else f' in {test_classes} of the classes'}.",
        f"Measured on {facts.sampled} training images (seed {survey.sample_seed}): {facts.size_range} px, "
        f"{'grey' if facts.grey else 'colour'}; recipe '{chosen.recipe}' (docs/recipes.md).",
        "Every value says why it was chosen: change what you know better. Then (README, 'Your own images'):",
        f"  stage 1 writes {chosen.value('DATASET.QUESTIONS')}, stage 2 {chosen.value('DATASET.ASPECT_JSON')},",
        f"  python tools/our_train.py {out.as_posix()}                        # MaKD",
        f"  python tools/our_train.py {out.as_posix()} DISTILLER.TYPE NONE    # the CE baseline",
        "",
    ]
    config_text = render_config(facts, chosen, header)
    atomic_write_text(out, config_text)
    try:
        loaded = load_cfg(str(out))
    except Exception:
        out.unlink(missing_ok=True)  # never leave a config that does not load
        raise
    for setting in chosen.settings:  # the file says what was chosen, to the value
        node = loaded
        for part in setting.key.split("."):
            node = node[part]
        if node != setting.value and not (isinstance(node, list) and list(node) == list(setting.value)):
            out.unlink(missing_ok=True)
            raise AssertionError(f"{out}: {setting.key} loads as {node!r}, not {setting.value!r}")
    atomic_write_text(study_path, render_study(out.as_posix(), str(chosen.value("EXPERIMENT.PROJECT")),
                                               study_path.as_posix(), seeds))  # fmt: skip
    p10, p50, p90 = percentiles
    print(f"{facts.data_dir}: {len(survey.classes)} classes, {survey.num_train} train / {survey.num_test} test "
          f"images; {facts.sampled} measured: {facts.size_range} px (shorter side {p10:.0f}/{p50:.0f}/{p90:.0f} at "
          f"the 10/50/90th percentile), {'grey' if facts.grey else 'colour'}, MEAN {facts.mean} STD {facts.std}")
    print(f"recipe '{chosen.recipe}': IMAGE_SIZE {chosen.value('DATASET.IMAGE_SIZE')}, student "
          f"{chosen.value('DISTILLER.STUDENT')}, {chosen.value('SOLVER.EPOCHS')} epochs of batch "
          f"{chosen.value('SOLVER.BATCH_SIZE')}")  # fmt: skip
    print(f"wrote {out} and {study_path}; next: questions in {chosen.value('DATASET.QUESTIONS')} (README, "
          "'Your own images')")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Write a starting config; 0 on success, 2 on bad input (one line on stderr, nothing written)."""
    return run_command(run, argv, "nothing was written")
