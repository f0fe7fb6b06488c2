"""MaKD + X (makd.distillers.aspect_combination): every combinable method has its MaKD_<X>; the combination's loss
is X's loss on the C class logits plus MaKD's aspect term on the Q aspect logits, by hand; evaluation sees C + Q."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from distiller_helpers import SIZE, C, cifar_resnet_maps, cross_entropy_by_hand, fixed_batch
from tool_modules import load_tool

from makd.config import load_cfg
from makd.config.defaults import uses_aspects, uses_teacher
from makd.distillers import DISTILLERS, build_distiller, distiller_classes
from makd.models import build_student
from makd.models.teacher import ClassLogitsTeacher

Q = 3


def test_every_combinable_method_has_its_makd_combination():
    combinable = {cls.name for cls in distiller_classes() if cls.combines_with_aspects and not cls.needs_aspects}
    assert combinable == {"AT", "CRD", "FITNET", "KDSVD", "MLKD", "NST", "OFD", "PKT", "REVIEWKD", "RKD", "SP", "VID"}
    for name in combinable:
        cls = DISTILLERS.get(f"MaKD_{name}")
        assert cls.name == f"MaKD_{name}" and cls.needs_aspects and cls.head_outputs(10, 4) == 14
        cfg = load_cfg(None, ["DISTILLER.TYPE", f"makd_{name.lower()}"])
        assert uses_aspects(cfg) and uses_teacher(cfg)
    assert DISTILLERS.get("MaKD_KD").__module__ == "makd.distillers.makd_kd"  # the older pairs stay as they were


def _tiny(method: str, alpha: float = 2.0):
    torch.manual_seed(0)
    student = build_student("resnet8", C + Q, input_family="cifar")
    teacher = ClassLogitsTeacher(build_student("resnet8x4", C, input_family="cifar"), C).eval().requires_grad_(False)
    cfg = load_cfg(None, ["DISTILLER.TYPE", method, "MaKD.ALPHA", str(alpha), "DATASET.IMAGE_SIZE", str(SIZE)])
    return student, teacher, build_distiller(cfg, student, C, Q, teacher).train()


def _aspect_batch():
    batch = fixed_batch()
    generator = torch.Generator().manual_seed(7)
    batch["aspects"] = torch.rand(len(batch["label"]), Q, generator=generator)
    batch["aspect_mask"] = (torch.rand(len(batch["label"]), Q, generator=generator) > 0.3).float()
    return batch


def test_makd_at_is_at_on_the_class_logits_plus_the_aspect_term_by_hand():
    student, teacher, distiller = _tiny("MaKD_AT", alpha=2.0)
    batch = _aspect_batch()
    logits, losses = distiller.forward_train(batch)
    assert set(losses) == {"loss_ce", "loss_at", "loss_aspect"} and logits.shape == (6, C)
    s = cifar_resnet_maps(student, batch["image"])
    with torch.no_grad():
        t = cifar_resnet_maps(teacher.model, batch["image"])
    assert torch.allclose(logits, s.logits[:, :C], atol=1e-6)
    assert abs(losses["loss_ce"].item() - cross_entropy_by_hand(s.logits[:, :C], batch["label"]).item()) < 1e-6

    def attention(f):
        q = f.pow(2).mean(1).flatten(1)
        return q / q.norm(dim=1, keepdim=True)

    at = sum(((attention(a) - attention(b)) ** 2).mean() for a, b in zip(s.stages, t.stages))
    assert abs(losses["loss_at"].item() - 1000.0 * at.item()) < 1e-6 * 1000
    z, y, m = s.logits[:, C:], batch["aspects"], batch["aspect_mask"]
    bce = -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z))
    assert abs(losses["loss_aspect"].item() - 2.0 * ((bce * m).sum() / m.sum()).item()) < 1e-6
    with torch.no_grad():
        assert distiller.forward_test(batch["image"]).shape == (6, C + Q)  # evaluation and export: all outputs


def test_makd_mlkd_takes_the_aspect_logits_of_the_recipe_view():
    student, _, distiller = _tiny("MaKD_MLKD")
    batch = _aspect_batch()
    batch["image_strong"] = torch.flip(batch["image"], dims=[3])
    _, losses = distiller.forward_train(batch)
    assert set(losses) == {"loss_ce", "loss_kd", "loss_bc", "loss_cc", "loss_aspect"}
    z = student(batch["image"])[:, C:]  # train mode, the same batch statistics as the step's first call
    y, m = batch["aspects"], batch["aspect_mask"]
    bce = -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z))
    assert abs(losses["loss_aspect"].item() - 2.0 * ((bce * m).sum() / m.sum()).item()) < 1e-6


def test_a_makd_fitnet_run_trains_the_aspect_head_and_the_regressor(release_dataset):
    root = release_dataset["root"]
    torch.manual_seed(2)
    torch.save(build_student("resnet14", 3, input_family="cifar").state_dict(), root / "teacher.pth")
    args = [
        str(release_dataset["config"]),
        *("DISTILLER.TYPE", "MaKD_FITNET", "DISTILLER.STUDENT", "resnet8", "DISTILLER.TEACHER", "resnet14"),
        *(
            "DISTILLER.TEACHER_CHECKPOINT",
            str(root / "teacher.pth"),
            "SOLVER.EPOCHS",
            "1",
            "OUTPUT_DIR",
            str(root / "r"),
        ),
        *("DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0"),
    ]
    assert load_tool("our_train").main(args) == 0
    summary = json.loads((root / "r" / "summary.json").read_text())
    assert (summary["distiller"], summary["num_aspects"]) == ("MaKD_FITNET", 5)
    rows = [json.loads(line) for line in (root / "r" / "metrics.jsonl").read_text().splitlines()]
    assert {"train_loss_ce", "train_loss_fitnet", "train_loss_aspect"} <= set(rows[0])
    state = torch.load(root / "r" / "latest.pth", weights_only=False)
    assert state["model"]["fc.weight"].shape[0] == 3 + 5 and any(
        k.startswith("regressor.") for k in state["distiller_extra"]
    )
