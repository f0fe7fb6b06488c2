"""Every feature-based method (and MLKD, with its two views) through the real trainer: its adaptors are optimised,
checkpointed under distiller_extra, left out of student.pth, and a run stopped after epoch 1 and resumed ends
exactly where an unbroken run ends (student and adaptors, bit for bit)."""

from __future__ import annotations

import json

import pytest
import torch
from tool_modules import load_tool

from makd.config import load_cfg
from makd.distillers import distiller_classes
from makd.distillers.feature_methods import FeatureDistiller
from makd.models import build_student

our_train = load_tool("our_train")

# DISTILLER.TYPE -> extra overrides that keep the tiny run meaningful (e.g. CRD's negatives below the 24 images)
METHODS = {
    "FITNET": [],
    "AT": [],
    "MLKD": [],
    "REVIEWKD": [],
    "CRD": ["CRD.NCE.K", "16", "CRD.FEAT.DIM", "16"],
    "OFD": [],
    "KDSVD": [],
    "VID": [],
    "NST": [],
    "RKD": [],
    "PKT": [],
    "SP": [],
}
WITHOUT_ADAPTORS = {"MLKD", "AT", "KDSVD", "NST", "RKD", "PKT", "SP"}  # methods whose loss has no learnable part


def test_every_feature_method_is_in_this_test():
    registered = {cls.name for cls in distiller_classes() if issubclass(cls, FeatureDistiller) or cls.name == "MLKD"}
    assert {name for name in registered if not name.startswith("MaKD_")} == set(METHODS)


@pytest.fixture
def teacher_file(release_dataset):
    torch.manual_seed(3)
    path = release_dataset["root"] / "teacher.pth"
    torch.save(build_student("resnet14", 3, input_family="cifar").state_dict(), path)
    return path


def _common(release_dataset, teacher_file, method: str) -> list[str]:
    return [
        str(release_dataset["config"]),
        *("DISTILLER.TYPE", method, "DISTILLER.STUDENT", "resnet8", "DISTILLER.TEACHER", "resnet14"),
        *("DISTILLER.TEACHER_CHECKPOINT", str(teacher_file), "DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0"),
        *("SOLVER.EPOCHS", "2", "SOLVER.LR_DECAY_STAGES", "[1]", "DATASET.CHECK_IMAGES", "False"),
        *METHODS[method],
    ]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_adaptors_are_trained_checkpointed_and_resumed_exactly(release_dataset, teacher_file, method):
    root = release_dataset["root"]
    common = _common(release_dataset, teacher_file, method)
    assert our_train.main([*common, "OUTPUT_DIR", str(root / "unbroken")]) == 0
    broken = root / "broken"
    assert our_train.main([*common, "OUTPUT_DIR", str(broken), "--stop-after-epoch", "1"]) == 0
    first = torch.load(broken / "latest.pth", weights_only=False)
    assert our_train.main([*common, "OUTPUT_DIR", str(broken), "--resume"]) == 0

    unbroken = torch.load(root / "unbroken" / "latest.pth", weights_only=False)
    resumed = torch.load(broken / "latest.pth", weights_only=False)
    extra = unbroken["distiller_extra"]
    assert bool(extra) is (method not in WITHOUT_ADAPTORS)
    assert not any(key.startswith(("student.", "teacher.")) for key in extra)
    assert set(extra) == set(resumed["distiller_extra"])
    for key, value in extra.items():
        assert torch.equal(value, resumed["distiller_extra"][key]), key
    for key, value in unbroken["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    trained = [k for k, v in extra.items() if v.is_floating_point() and not torch.equal(v, first["distiller_extra"][k])]
    assert trained or method in WITHOUT_ADAPTORS, "no adaptor tensor changed during epoch 2"
    export = torch.load(root / "unbroken" / "student.pth", weights_only=False)["model"]
    assert set(export) == set(unbroken["model"])  # student.pth: the student alone
    # every term the method returns has its declared weight (the epoch line shows each before it), equal to the config's
    rows = [json.loads(line) for line in (root / "unbroken" / "metrics.jsonl").read_text().splitlines()]
    group = load_cfg(str(release_dataset["config"]), common[1:])[method]
    for row in rows:
        returned = {key.removeprefix("train_loss_") for key in row if key.startswith("train_loss_")}
        assert set(row["loss_weights"]) == returned
        if method == "REVIEWKD":  # its warm-up, 1-based epoch
            weight = group.REVIEWKD_WEIGHT * min(row["epoch"] / group.WARMUP_EPOCHS, 1.0)
        else:
            weight = group.KD_WEIGHT if method == "MLKD" else group.LOSS.FEAT_WEIGHT
        term = next(name for name in row["loss_weights"] if name not in ("ce", "bc", "cc"))
        assert row["loss_weights"][term] == pytest.approx(weight)
