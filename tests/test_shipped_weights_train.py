"""The shipped configs' loss weights train at the shipped configs' own learning rates (issue 25, items 2 and 3).

Every shipped classification config with an auxiliary or teacher term (LaViD, MaKD, the KD family and MLKD) is grouped
by what decides whether its weights train: the method, the input family (CIFAR-style or ImageNet-style), the learning
rate, the batch size and the momentum. Each group runs once, with the heaviest weights any of its configs ships
(LaViD's lambda per target: lambda / K), for 3 epochs (6 for the CIFAR-style KD and MLKD) on a demo-sized set:
16 classes x 16 images of 32 px; the ImageNet family's ResNet18 and the CIFAR family's resnet8x4 both at 32 px (the
test's budget; ResNet18's pooled features at 32 px have the scale they have at 224: docs/health.md), the KD family's
and MLKD's teacher a resnet8x4 trained first on the same images. The class loss must leave ln C, the training top-1
rise above chance, and the training-health checks (on the last epoch) find nothing.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from tool_modules import load_tool

from makd.config import load_cfg
from makd.demo.class_teacher import write_class_teacher
from makd.demo.classification import demo_classes, generate_demo
from makd.engine.health import chance_top1
from makd.formats.aspect_files import write_aspect_file
from makd.models import input_family_of

REPO = Path(__file__).resolve().parents[1]
our_train = load_tool("our_train")


def lavid_targets_per_class(cfg) -> int:
    """K of the per-class file a shipped LaViD config names: the demo's class teacher answers 16 yes/no questions;
    LaViD's chat_50-5 files and the digits' choice file hold 50 x 5 options."""
    return 16 if Path(cfg.LaViD.CLASS_TARGETS).name == "class_teacher.json" else 250


# the weights of each method's terms (larger = a heavier auxiliary or teacher term), as the configs set them; LaViD's
# lambda weighs a mean over K targets, so its strength per target is lambda / K (docs/health.md)
WEIGHTS = {
    "LaViD": lambda cfg: (cfg.LaViD.LAMBDA / cfg.LaViD.CE_WEIGHT / lavid_targets_per_class(cfg),),
    "MaKD": lambda cfg: (cfg.MaKD.ALPHA / cfg.MaKD.CE_WEIGHT,),
    "KD": lambda cfg: (cfg.KD.LOSS.KD_WEIGHT / cfg.KD.LOSS.CE_WEIGHT, cfg.KD.TEMPERATURE),
    "DKD": lambda cfg: (cfg.DKD.ALPHA / cfg.DKD.CE_WEIGHT, cfg.DKD.BETA / cfg.DKD.CE_WEIGHT),
    "MaKD_KD": lambda cfg: (cfg.MaKD.ALPHA / cfg.MaKD.CE_WEIGHT, cfg.KD.LOSS.KD_WEIGHT / cfg.MaKD.CE_WEIGHT),
    "MLKD": lambda cfg: (cfg.MLKD.KD_WEIGHT / cfg.MLKD.CE_WEIGHT, max(cfg.MLKD.TEMPERATURES)),
}
# the run's student and crop per input family (the shipped students differ within a group; these two are the paper's
# and the demo's; the CIFAR family's crop is what DATASET.TYPE cifar100 sets, makd.config.defaults)
FAMILY_RUN = {"imagenet": ("ResNet18", "rrc"), "cifar": ("resnet8x4", "crop_pad")}


def shipped_groups() -> dict[tuple, list[tuple[tuple, Path]]]:
    """(method, input family, lr, batch, momentum) -> [(weights, config path), ...] over the shipped configs."""
    groups: dict[tuple, list] = defaultdict(list)
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        if path.name.startswith("_") or "studies" in path.parts:
            continue
        cfg = load_cfg(str(path))
        method = cfg.DISTILLER.TYPE
        if cfg.TASK != "classification" or method == "NONE":
            continue
        assert method in WEIGHTS, f"{path}: no family test covers DISTILLER.TYPE {method}; add its weights here"
        key = (method, input_family_of(cfg), cfg.SOLVER.LR, cfg.SOLVER.BATCH_SIZE, cfg.SOLVER.MOMENTUM)
        groups[key].append((WEIGHTS[method](cfg), path))
    return dict(groups)


def representatives() -> list[tuple[tuple, Path]]:
    """Each group's config with the heaviest weights; every other member's weights are at most its, term by term."""
    chosen = []
    for key, members in shipped_groups().items():
        weights, path = max(members, key=lambda member: member[0])
        for other, other_path in members:
            assert all(a <= b for a, b in zip(other, weights)), f"{other_path} is heavier than {path} in a term"
        chosen.append((key, path))
    return chosen


def test_every_family_is_grouped_and_lavid_keeps_its_published_lambda_at_lr_001():
    groups = shipped_groups()
    lavid = {key: members for key, members in groups.items() if key[0] == "LaViD" and key[1] == "imagenet"}
    assert list(lavid) == [("LaViD", "imagenet", 0.01, 16, 0.9)]  # LaViD's own recipe: lr 0.01, batch 16
    assert max(w for w, _ in next(iter(lavid.values()))) == (50.0 / 250,)  # its largest ResNet18 lambda, K = 250
    assert {key[0] for key in groups} >= {"LaViD", "MaKD", "KD", "DKD", "MaKD_KD", "MLKD"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """16 demo classes x 16 training images; per-class targets shaped like the shipped files: 50 yes/no answers
    (MaKD's ASPECT_NUM 50) and 50 questions x 5 options (LaViD's chat_50-5, K = 250)."""
    root = tmp_path_factory.mktemp("shipped")
    generate_demo(root / "demo", train_per_class=16, test_per_class=2, seed=0)
    write_class_teacher(root / "demo", samples=4)  # the demo's 16 class-level answers (configs/demo/lavid.yaml)
    rng = np.random.default_rng(0)
    names = [c.name for c in demo_classes()]
    yes_no = {name: rng.uniform(0, 1, 50).round(4).tolist() for name in names}
    choice = {name: rng.dirichlet(np.ones(5), 50).round(4).tolist() for name in names}
    (root / "choice.json").write_text(json.dumps(choice))
    write_aspect_file(root / "yes_no.json", yes_no)
    return {"root": root, "demo": root / "demo", "yes_no": root / "yes_no.json", "choice": root / "choice.json",
            "class_teacher": root / "demo" / "class_teacher.json"}  # fmt: skip


def _overrides(data: dict, family: str, out: Path) -> list[str]:
    student, crop = FAMILY_RUN[family]
    demo = data["demo"]
    return [
        *("DATASET.TYPE", "image_folder", "DATASET.NUM_CLASS", "16", "DATASET.ROOT", str(demo)),
        *("DATASET.TRAIN_IMAGE_PATH", str(demo / "train"), "DATASET.TEST_IMAGE_PATH", str(demo / "test")),
        *("DATASET.ASPECT_JSON", str(data["yes_no"]), "DATASET.TEST_ASPECT_JSON", "", "DATASET.QUESTIONS", ""),
        *("DATASET.IMAGE_SIZE", "32", "DATASET.RESIZE_RATIO", "1.0", "DATASET.AUGMENT.CROP", crop),
        *(
            "DATASET.NUM_WORKERS",
            "0",
        ),
        *("DATASET.CACHE_IMAGES", "True", "DATASET.TEST.BATCH_SIZE", "64", "DEVICE", "cpu", "NUM_THREADS", "1"),
        *("DISTILLER.STUDENT", student, "MaKD.ASPECT_NUM", "50", "LaViD.CLASS_TARGETS", str(data["choice"])),
        *("SOLVER.EPOCHS", "3", "LOG.SAVE_CHECKPOINT_FREQ", "0", "LOG.TENSORBOARD_FREQ", "0", "OUTPUT_DIR", str(out)),
        *("HEALTH.AFTER_EPOCHS", "3"),  # the epoch checks on the last epoch: 48 or 12 steps are a slow start's budget
    ]


@pytest.fixture(scope="module")
def teacher(data) -> Path:
    """The KD family's teacher: a resnet8x4 trained with cross-entropy for 8 epochs on the same images, with the same
    normalisation (KD presumes a teacher that knows the classes; a near-chance one teaches a near-uniform target)."""
    out = data["root"] / "teacher"
    config = REPO / "configs" / "cifar100" / "resnet8x4_baseline.yaml"
    assert our_train.main([str(config), *_overrides(data, "cifar", out), "SOLVER.EPOCHS", "8"]) == 0
    return out / "student.pth"


@pytest.mark.parametrize(
    "key,config", representatives(), ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else ""
)
def test_shipped_weights_leave_ln_c_at_their_learning_rate(key, config, data, teacher, tmp_path):
    method, family = key[0], key[1]
    out = tmp_path / "run"
    args = [str(config), *_overrides(data, family, out)]
    if method == "LaViD":  # a file of the K the config is shipped for
        targets = data["class_teacher"] if lavid_targets_per_class(load_cfg(str(config))) == 16 else data["choice"]
        args += ["LaViD.CLASS_TARGETS", str(targets)]
    if method in ("KD", "DKD", "MaKD_KD", "MLKD"):
        args += ["DISTILLER.TEACHER", "resnet8x4", "DISTILLER.TEACHER_CHECKPOINT", str(teacher)]
    if (method, family) in (("KD", "cifar"), ("MLKD", "cifar")):  # CE weight 0.1: the class loss climbs above ln C
        args += ["SOLVER.EPOCHS", "6"]  # first, crosses it at epoch 3
    assert our_train.main(args) == 0
    cfg = load_cfg(str(config), args[1:])
    assert (cfg.SOLVER.LR, cfg.SOLVER.BATCH_SIZE) == key[2:4]  # the shipped learning rate and batch, unchanged
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train_loss_ce"] / _ce_weight(cfg) for row in rows]  # the class loss, unweighted
    ln_c = math.log(16)
    # left ln C: below it at some epoch, or away from it at the last (the KD family's student first climbs above
    # ln C while copying its teacher's logits; ResNet18's loss at batch 16 moves by a few % from epoch to epoch)
    assert min(losses) < 0.97 * ln_c or abs(losses[-1] - ln_c) > 0.03 * ln_c, f"{config.name}: class loss {losses}"
    assert rows[-1]["train_top1"] > chance_top1(1 / 16, 16 * 16), f"{config.name}: top-1 {rows[-1]['train_top1']}"
    health = json.loads((out / "summary.json").read_text())["health"]
    assert health["findings"] == [], [f["message"] for f in health["findings"]]


def _ce_weight(cfg) -> float:
    """What train_loss_ce is a multiple of the mean class loss by (MLKD sums its weak and strong views' CE)."""
    if cfg.DISTILLER.TYPE == "MLKD":
        return 2 * cfg.MLKD.CE_WEIGHT
    return {"LaViD": cfg.LaViD.CE_WEIGHT, "KD": cfg.KD.LOSS.CE_WEIGHT, "DKD": cfg.DKD.CE_WEIGHT}.get(
        cfg.DISTILLER.TYPE, cfg.MaKD.CE_WEIGHT
    )
