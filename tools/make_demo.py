"""Generate the built-in synthetic demo dataset: python tools/make_demo.py [--out data/demo] [--seed 0] ...

Writes class folders of PNGs, a questions file and a simulated teacher's aspect files (docs/demo.md).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from makd.demo.class_teacher import write_class_teacher  # noqa: E402
from makd.demo.classification import generate_demo  # noqa: E402
from makd.demo.oriented import generate_oriented_demo  # noqa: E402

# Per-variant defaults of the size arguments (None on the command line = the variant's own).
VARIANT_DEFAULTS = {"default": {"image_size": 32, "train_per_class": 200, "test_per_class": 40},
                    "oriented": {"image_size": 28, "train_per_class": 30, "test_per_class": 30}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="make_demo.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of images and teacher (same seed, same bytes)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    parser.add_argument("--variant", choices=sorted(VARIANT_DEFAULTS), default="default",
                        help="default: 16 colour x texture classes (RGB, 32 px); oriented: 10 grey glyph classes that "
                             "differ by left/right orientation, with flip-sensitive questions (docs/demo.md)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image side in pixels (default 32; oriented: 28)")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="training images per class (default 200 of 16 classes; oriented: 30 of 10)")
    parser.add_argument("--test-per-class", type=int, default=None,
                        help="test images per class (default 40; oriented: 30)")
    parser.add_argument("--teacher-noise", type=float, default=1.0, help="std of the teacher's logit noise")
    parser.add_argument("--teacher-calibration", type=float, default=1.0,
                        help="teacher logit scale: < 1 under-confident, > 1 over-confident")
    parser.add_argument("--unreliable-noise-factor", type=float, default=3.0,
                        help="noise multiplier of the questions the teacher answers poorly")
    parser.add_argument("--class-teacher", action="store_true",
                        help="also write a simulated class-level (text-only, LaViD-style) teacher: class_teacher.json "
                             "{class: [p_1..p_Q]} and its spread to the images, class_teacher_{train,test}.json")
    parser.add_argument("--class-teacher-noise", type=float, default=1.0,
                        help="std of the class-level teacher's logit noise (drawn once per class and question)")
    parser.add_argument("--class-teacher-calibration", type=float, default=1.0,
                        help="class-level teacher logit scale")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, value in VARIANT_DEFAULTS[args.variant].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.variant == "oriented":
        return _oriented(args)
    try:
        summary = generate_demo(
            args.out, seed=args.seed, image_size=args.image_size, train_per_class=args.train_per_class,
            test_per_class=args.test_per_class, teacher_noise=args.teacher_noise,
            teacher_calibration=args.teacher_calibration, unreliable_noise_factor=args.unreliable_noise_factor,
            overwrite=args.overwrite,
        )
        if args.class_teacher:
            write_class_teacher(args.out, noise=args.class_teacher_noise,
                                calibration=args.class_teacher_calibration, overwrite=True)  # a new demo folder
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    accuracy = summary["teacher_accuracy_train"]
    print(f"[demo] wrote {summary['num_train']} train + {summary['num_test']} test images of "
          f"{summary['num_classes']} classes, {summary['num_questions']} questions, to {summary['out_dir']} "
          f"in {summary['seconds']:.1f}s")
    print(f"[demo] simulated teacher agrees with the true answers on {min(accuracy.values()):.1%} to "
          f"{max(accuracy.values()):.1%} of training images per question; details in "
          f"{json.dumps(str(Path(summary['out_dir']) / 'dataset.json'))}")
    if args.class_teacher:
        print(f"[demo] simulated class-level teacher: {Path(summary['out_dir']) / 'class_teacher.json'} "
              "(16 classes x 16 questions) and its spread to the images, class_teacher_{train,test}.json")
    return 0


def _oriented(args: argparse.Namespace) -> int:
    if args.class_teacher or args.unreliable_noise_factor != 3.0:
        print("error: --class-teacher and --unreliable-noise-factor are options of --variant default only",
              file=sys.stderr)
        return 2
    try:
        summary = generate_oriented_demo(
            args.out, seed=args.seed, image_size=args.image_size, train_per_class=args.train_per_class,
            test_per_class=args.test_per_class, teacher_noise=args.teacher_noise,
            teacher_calibration=args.teacher_calibration, overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sensitive = sum(q["flip_sensitive"] for q in summary["questions"])
    print(f"[demo] oriented variant: wrote {summary['num_train']} train + {summary['num_test']} test grey images of "
          f"{summary['num_classes']} classes, {summary['num_questions']} questions ({sensitive} flip-sensitive, "
          f"declared in questions.txt.meta.json), to {summary['out_dir']} in {summary['seconds']:.1f}s")
    print(f"[demo] a horizontal flip changes {summary['hard_answers_changed_by_flip']:.1%} of the teacher's true "
          "answers on the training images; aspects_train.flip.json holds its rows for the mirrored images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
