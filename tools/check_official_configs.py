"""Account for every YAML of a config folder: does it load, train one epoch on tiny data, or refuse clearly?

    python tools/check_official_configs.py CONFIG_DIR [--load-only] [--max-classes N] [--max-batch N] [--work DIR]

For each `*.yaml` under CONFIG_DIR (sorted), three outcomes, one line each:
  train   it loads and trains 1 epoch on generated data of its dataset's shape (class count, image size),
          changing only data keys: image paths (+ DATASET.TYPE when the file names no dataset, taken from
          its folder: cifar100 / imagenet / tiny_imagenet), a generated aspect file for aspect methods, a
          random teacher checkpoint (its BatchNorm statistics estimated on those images) for teacher methods, and the
          image size of that dataset when the file sets none; plus the run controls SOLVER.EPOCHS 1,
          OUTPUT_DIR, DEVICE cpu, DATASET.NUM_WORKERS 0.
  refuse  it names a method makd does not implement and stops with one line naming it (MethodNotImplementedError)
  fail    any other error (a user error's one line; a bug's exception type and first line)
then a table and the totals. Exit code 0 when every file trained or refused, 1 otherwise.
On a CPU machine, mdistiller's ImageNet files (1000 classes, batch 512 at 224 px: ~20 GB for MobileNetV1)
want `--max-classes 10 --max-batch 64`; both are reported as overrides, not as the file's shape.
The official MaKD repository's files: mkdir -p official && git -C <mirror> archive HEAD configs | tar -x -C official
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from makd.config import MethodNotImplementedError, load_cfg  # noqa: E402
from makd.errors import MakdError, one_line  # noqa: E402
from makd.formats.strict_yaml import load_yaml  # noqa: E402


@dataclass(frozen=True)
class DataShape:
    """What generated data must look like for a dataset: C classes of square images `size` px wide."""

    num_classes: int
    size: int


# mdistiller's datasets (its dataset/__init__.py: 100, 1000 and 200 classes) at their native sizes.
DATASET_SHAPES = {"cifar100": DataShape(100, 32), "imagenet": DataShape(1000, 224), "tiny_imagenet": DataShape(200, 64)}


@dataclass
class Outcome:
    config: str
    status: str  # "train" | "refuse" | "fail" ("load" with --load-only)
    stage: str  # where it ended: "load" or "train"
    note: str


def _yaml(path: Path) -> dict:
    data = load_yaml(path.read_text(encoding="utf-8"), str(path))  # a key written twice is an error, as in load_cfg
    return data if isinstance(data, dict) else {}


def dataset_of(path: Path, root: Path, data: dict) -> tuple[str, bool]:
    """(dataset name, whether the file names it): DATASET.TYPE, else the first folder under `root` that is a
    known dataset (mdistiller's cifar100 files carry no DATASET section: its default was cifar100)."""
    named = (data.get("DATASET") or {}).get("TYPE")
    if isinstance(named, str) and named:
        return named, True
    for part in path.relative_to(root).parts[:-1]:
        if part.lower() in DATASET_SHAPES:
            return part.lower(), False
    return "", False


def shape_of(cfg, dataset: str, max_classes: int) -> DataShape:
    """The data shape of a loaded config: its NUM_CLASS / IMAGE_SIZE when set, else its dataset's."""
    known = DATASET_SHAPES.get(dataset.lower())
    num_classes = cfg.DATASET.NUM_CLASS or (known.num_classes if known else 0)
    if num_classes < 1:
        raise MakdError(f"cannot tell how many classes DATASET.TYPE {dataset!r} has; the file sets no NUM_CLASS")
    if max_classes and not cfg.DATASET.NUM_CLASS:
        num_classes = min(num_classes, max_classes)
    return DataShape(num_classes, known.size if known else cfg.DATASET.IMAGE_SIZE)


def write_release_folder(folder: Path, shape: DataShape, per_class: int, seed: int) -> list[str]:
    """Flat `class<k>_<k>_<i>.png` images (the release layout), a class-coloured field plus noise -> ids."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    for label in range(shape.num_classes):
        colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 157) % 256], dtype=np.int16)
        for index in range(per_class):
            noise = rng.integers(-20, 21, size=(shape.size, shape.size, 3), dtype=np.int16)
            pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
            stem = f"class{label}_{label}_{index}"
            Image.fromarray(pixels).save(folder / f"{stem}.png", compress_level=1)
            ids.append(stem)
    return ids


class DataCache:
    """Generated train/test folders (and aspect files) per shape, made once per run of the tool."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.folders: dict[tuple[int, int, int], tuple[Path, Path, list[str]]] = {}

    def folders_for(self, shape: DataShape, batch_size: int) -> tuple[Path, Path, list[str]]:
        # Enough training images for one full batch, so the epoch takes at least one optimiser step.
        per_class = max(1, math.ceil(batch_size / shape.num_classes))
        key = (shape.num_classes, shape.size, per_class)
        if key not in self.folders:
            base = self.work / f"data_c{shape.num_classes}_s{shape.size}_n{per_class}"
            train_ids = write_release_folder(base / "train", shape, per_class, seed=0)
            write_release_folder(base / "test", shape, 1, seed=1)
            self.folders[key] = (base / "train", base / "test", train_ids)
        return self.folders[key]

    def aspect_file(self, train_ids: list[str], num_aspects: int, tag: str) -> Path:
        path = self.work / f"aspects_{tag}_q{num_aspects}.json"
        if not path.exists():
            rng = np.random.default_rng(2)
            path.write_text(json.dumps({i: rng.random(num_aspects).round(4).tolist() for i in train_ids}))
        return path


def _distiller_needs(cfg) -> tuple[bool, bool]:
    """(needs aspect rows, needs a teacher) of the configured method, asked of the method's registry entry
    when it says so, else from the method's name (MaKD* use aspects; everything but NONE/CE/MaKD a teacher)."""
    from makd.distillers import DISTILLERS

    entry = DISTILLERS.get(cfg.DISTILLER.TYPE)
    kind = cfg.DISTILLER.TYPE.upper()
    aspects = getattr(entry, "needs_aspects", None)
    teacher = getattr(entry, "needs_teacher", None)
    if aspects is None:
        aspects = kind.startswith("MAKD")
    if teacher is None:
        teacher = kind not in ("NONE", "CE", "MAKD")
    return bool(aspects), bool(teacher)


def generated_batches(folder: Path, mean, std, batch_size: int = 16, limit: int = 64) -> list[torch.Tensor]:
    """Up to `limit` generated training images of `folder`, normalised with the config's MEAN/STD, in batches."""
    files = sorted(folder.glob("*.png"))[:limit]
    images = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0) for f in files]
    stack = (torch.stack(images).permute(0, 3, 1, 2) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    return list(stack.split(batch_size))


def calibrate_batchnorm(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    """BatchNorm running statistics of `model` estimated on `batches` (passes in train mode, then eval mode).

    A random network's eval-mode BatchNorms (mean 0, variance 1) leave its deep features unnormalised: on the
    generated images a random ResNet50's stages reach values of 1e3 and ReviewKD's loss (mdistiller's weight 8)
    starts at 1e5 and diverges in one step. With statistics of the data they see, the teacher's features have the
    scale a teacher trained on this data would have.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def teacher_checkpoint(cfg, shape: DataShape, work: Path, train_dir: Path) -> Path:
    """A randomly initialised teacher of DISTILLER.TEACHER with C outputs, its BatchNorm statistics estimated on
    the generated training images (calibrate_batchnorm), saved as a plain state dict."""
    from makd.models import build_student, input_family_of

    path = work / f"teacher_{cfg.DISTILLER.TEACHER}_{input_family_of(cfg)}_c{shape.num_classes}_s{shape.size}.pth"
    if not path.exists():
        model = build_student(cfg.DISTILLER.TEACHER, shape.num_classes, input_family=input_family_of(cfg))
        calibrate_batchnorm(model, generated_batches(train_dir, cfg.DATASET.MEAN, cfg.DATASET.STD))
        torch.save(model.state_dict(), path)
    return path


def data_overrides(path: Path, root: Path, cache: DataCache, max_classes: int, max_batch: int, index: int) -> list[str]:
    """The KEY VALUE list that points `path` at generated data of its shape (see the module docstring)."""
    data = _yaml(path)
    dataset, named = dataset_of(path, root, data)
    opts = [] if named or not dataset else ["DATASET.TYPE", dataset]
    cfg = load_cfg(str(path), opts, check=False)
    shape = shape_of(cfg, cfg.DATASET.TYPE, max_classes)
    batch_size = min(cfg.SOLVER.BATCH_SIZE, max_batch) if max_batch else cfg.SOLVER.BATCH_SIZE
    if batch_size != cfg.SOLVER.BATCH_SIZE:  # memory of the machine, not the file's shape (--max-batch)
        opts += ["SOLVER.BATCH_SIZE", str(batch_size)]
    if max_batch and cfg.DATASET.TEST.BATCH_SIZE > max_batch:
        opts += ["DATASET.TEST.BATCH_SIZE", str(max_batch)]
    train_dir, test_dir, train_ids = cache.folders_for(shape, batch_size)
    opts += ["DATASET.TRAIN_IMAGE_PATH", str(train_dir), "DATASET.TEST_IMAGE_PATH", str(test_dir)]
    if "IMAGE_SIZE" not in (data.get("DATASET") or {}) and shape.size != cfg.DATASET.IMAGE_SIZE:
        opts += ["DATASET.IMAGE_SIZE", str(shape.size)]
    if cfg.DATASET.NUM_CLASS and cfg.DATASET.NUM_CLASS != shape.num_classes:
        opts += ["DATASET.NUM_CLASS", str(shape.num_classes)]  # only with --max-classes
    needs_aspects, needs_teacher = _distiller_needs(cfg)
    if needs_aspects:
        aspects = cache.aspect_file(train_ids, cfg.MaKD.ASPECT_NUM, f"c{shape.num_classes}_s{shape.size}")
        opts += ["DATASET.ASPECT_JSON", str(aspects), "DATASET.QUESTIONS", ""]
    if needs_teacher and "TEACHER_CHECKPOINT" in cfg.DISTILLER:
        shaped = load_cfg(str(path), opts, check=False)
        opts += ["DISTILLER.TEACHER_CHECKPOINT", str(teacher_checkpoint(shaped, shape, cache.work, train_dir))]
    run_controls = ["SOLVER.EPOCHS", "1", "DEVICE", "cpu", "DATASET.NUM_WORKERS", "0", "LOG.WANDB", "False"]
    return opts + run_controls + ["OUTPUT_DIR", str(cache.work / "runs" / f"{index:03d}_{path.stem}")]


def _failure(err: BaseException) -> str:
    if isinstance(err, MakdError):
        return one_line(str(err))
    return f"BUG {type(err).__name__}: {one_line(str(err))}"  # not a user error: a defect to fix


def check_one(
    path: Path, root: Path, cache: DataCache, max_classes: int, max_batch: int, load_only: bool, index: int
) -> Outcome:
    import makd.tasks  # noqa: F401  (every task joins makd.engine.tasks.TASKS)
    from makd.engine.trainer import train

    name = str(path.relative_to(root))
    try:
        load_cfg(str(path), check=False)
    except MethodNotImplementedError as err:
        return Outcome(name, "refuse", "load", one_line(str(err)).split(": ", 1)[-1])
    except Exception as err:  # noqa: BLE001  (every failure is reported, the tool goes on)
        return Outcome(name, "fail", "load", _failure(err))
    if load_only:
        return Outcome(name, "load", "load", "loaded (--load-only: not trained)")
    try:
        opts = data_overrides(path, root, cache, max_classes, max_batch, index)
        cfg = load_cfg(str(path), opts)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            summary = train(cfg, overwrite=True)
    except MethodNotImplementedError as err:
        return Outcome(name, "refuse", "train", one_line(str(err)))
    except Exception as err:  # noqa: BLE001
        return Outcome(name, "fail", "train", _failure(err))
    summary = summary if isinstance(summary, dict) else {}  # train() returns None on ranks > 0
    top1 = summary.get("test_top1_last")
    note = f"1 epoch, {cfg.DISTILLER.TYPE} {cfg.DISTILLER.STUDENT}, C={summary.get('num_classes', '?')}"
    return Outcome(name, "train", "train", note + (f", test top-1 {top1:.2f}" if top1 is not None else ""))


def format_table(outcomes: list[Outcome]) -> str:
    width = max([len(o.config) for o in outcomes] + [6])
    lines = [f"{'config':<{width}}  {'result':<6}  note", f"{'-' * width}  ------  ----"]
    lines += [f"{o.config:<{width}}  {o.status:<6}  {o.note}" for o in outcomes]
    return "\n".join(lines)


def totals(outcomes: list[Outcome]) -> dict[str, int]:
    """Counts: loaded (merged without error), trained, refused, failed, and the total."""
    loaded = sum(o.status in ("train", "load") or o.stage == "train" for o in outcomes)
    counts = {status: sum(o.status == status for o in outcomes) for status in ("train", "refuse", "fail")}
    return {"yaml": len(outcomes), "load": loaded, **counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check_official_configs.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("config_dir", help="folder of YAML configs, searched recursively")
    parser.add_argument("--load-only", action="store_true", help="only load each file (no data, no training)")
    parser.add_argument(
        "--max-classes", type=int, default=0, metavar="N", help="cap the generated classes (files without NUM_CLASS)"
    )
    parser.add_argument(
        "--max-batch", type=int, default=0, metavar="N", help="cap SOLVER.BATCH_SIZE and DATASET.TEST.BATCH_SIZE"
    )
    parser.add_argument("--work", metavar="DIR", help="keep generated data and runs here (default: a temp folder)")
    args = parser.parse_args(argv)
    root = Path(args.config_dir)
    files = sorted(root.rglob("*.yaml"))
    if not files:
        print(f"error: no *.yaml under {root}", file=sys.stderr)
        return 2
    logging.disable(logging.WARNING)  # the trainer's per-epoch lines; failures are reported in the table
    with tempfile.TemporaryDirectory(prefix="makd_configs_") as temp:
        cache = DataCache(Path(args.work) if args.work else Path(temp))
        cache.work.mkdir(parents=True, exist_ok=True)
        outcomes = []
        for index, path in enumerate(files):
            outcomes.append(check_one(path, root, cache, args.max_classes, args.max_batch, args.load_only, index))
            print(f"[{index + 1}/{len(files)}] {outcomes[-1].status:<6} {outcomes[-1].config}", file=sys.stderr)
    print(format_table(outcomes))
    count = totals(outcomes)
    trained = "" if args.load_only else f"{count['train']} train 1 epoch, "
    print(
        f"\n{count['yaml']} YAML files: {count['load']} load, {trained}"
        f"{count['refuse']} refuse (method not implemented), {count['fail']} fail"
    )
    return 0 if count["fail"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
