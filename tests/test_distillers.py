"""The distiller contract: registry-backed config checks, the frozen teacher, the learnable parameters."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from mirrors import mirror
from tool_modules import load_tool

from makd.config import ConfigError, get_cfg, load_cfg
from makd.config.defaults import uses_aspects, uses_teacher
from makd.distillers import DISTILLERS, Distiller, build_distiller, config_value, distiller_class, distiller_classes
from makd.distillers.dkd import dkd_losses, dkd_terms, dkd_warmup_factor, warmed_up
from makd.distillers.kd import kd_loss
from makd.distillers.logit_standardization import standardize_logits
from makd.distillers.losses import aspect_bce, class_cross_entropy, makd_losses
from makd.engine.optim import build_optimizer
from makd.models.teacher import TeacherError
from makd.tasks.classification import teacher_from_config

OFFICIAL = mirror("taegyeong-lee/MaKD-Multi-aspect-knowledge-distillation-with-Large-Language-Model")


class TinyNet(torch.nn.Module):
    """4 features -> BatchNorm -> dropout -> Linear: train/eval mode changes its output."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.bn, self.drop, self.fc = torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5), torch.nn.Linear(4, outputs)

    def forward(self, x):
        return self.fc(self.drop(self.bn(x)))


class ProbeDistiller(Distiller):
    """A teacher-using method defined only here (not registered): the base class alone must freeze the teacher."""

    name = "PROBE"
    needs_teacher = True

    def forward_train(self, batch):
        logits = self.student(batch["image"])
        return logits, {"loss_gap": (logits - self.teacher_logits(batch)).pow(2).mean()}


def test_every_method_declares_itself_and_the_config_asks_the_registry():
    names = {cls.name for cls in distiller_classes()}
    assert {"NONE", "MaKD"} <= names
    for cls in distiller_classes():
        assert cls.name in DISTILLERS and DISTILLERS.get(cls.name) is cls and distiller_class(cls.name.lower()) is cls
        cfg = load_cfg(None, ["DISTILLER.TYPE", cls.name])
        assert uses_aspects(cfg) is cls.needs_aspects and uses_teacher(cfg) is cls.needs_teacher
        assert cls.head_outputs(10, 4) == (14 if cls.needs_aspects else 10)
    with pytest.raises(ConfigError) as err:
        load_cfg(None, ["DISTILLER.TYPE", "SSKD"])
    message = str(err.value)
    assert message.startswith("command line: DISTILLER.TYPE 'SSKD' is unknown") and "\n" not in message
    assert all(name in message for name in names)


def test_teacher_is_frozen_in_eval_mode_and_left_out_of_the_optimizer():
    torch.manual_seed(0)
    student, teacher = TinyNet(3), TinyNet(3)
    distiller = ProbeDistiller(student, num_classes=3, teacher=teacher)
    assert not any(p.requires_grad for p in teacher.parameters())
    distiller.train()
    assert student.training and not teacher.training and not teacher.drop.training
    x = torch.randn(8, 4)
    before = teacher.bn.running_mean.clone()
    first = distiller.teacher_logits({"image": x})
    assert torch.equal(first, distiller.teacher_logits({"image": x}))  # no dropout, no batch statistics
    assert torch.equal(teacher.bn.running_mean, before)
    learnable = list(distiller.learnable_parameters())
    assert {id(p) for p in learnable} == {id(p) for p in student.parameters()}
    cfg = load_cfg(None)
    optimizer = build_optimizer(cfg, distiller)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(student.parameters()))
    # One step moves the student and leaves the teacher's weights untouched.
    teacher_weights = {k: v.clone() for k, v in teacher.state_dict().items()}
    _, losses = distiller({"image": x})
    sum(losses.values()).backward()
    optimizer.step()
    assert all(torch.equal(teacher_weights[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    # The teacher's tensors sit under "teacher." in the distiller's state (a checkpoint leaves them out).
    assert any(k.startswith("teacher.") for k in distiller.state_dict())
    with pytest.raises(ValueError, match="needs a teacher"):
        ProbeDistiller(TinyNet(3), num_classes=3)


def test_precomputed_teacher_logits_are_read_by_index():
    distiller = ProbeDistiller(TinyNet(3), num_classes=3, teacher=TinyNet(3))
    table = torch.arange(15, dtype=torch.float32).view(5, 3)
    distiller.set_precomputed_teacher_logits(table)
    rows = distiller.teacher_logits({"image": torch.randn(2, 4), "index": torch.tensor([4, 1])})
    assert torch.equal(rows, table[[4, 1]])
    assert not any("precomputed" in k for k in distiller.state_dict())


def test_set_epoch_and_the_head_width_of_the_baselines():
    cfg = get_cfg()
    cfg.DISTILLER.TYPE = "NONE"
    base = build_distiller(cfg, TinyNet(3), 3, 0)
    base.set_epoch(7)
    assert base.epoch == 7 and base.num_aspects == 0
    makd = build_distiller(load_cfg(None), TinyNet(5), 3, 2)
    assert makd.num_aspects == 2 and type(makd).head_outputs(3, 2) == 5


# --- KD ------------------------------------------------------------------------------------------------


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


STUDENT_LOGITS = [[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
TEACHER_LOGITS = [[2.0, 1.0, 0.0], [1.0, 0.0, -1.0]]


def test_kd_loss_hand_value_with_temperature_scaling():
    s, t = torch.tensor(STUDENT_LOGITS), torch.tensor(TEACHER_LOGITS)
    for temperature in (1.0, 2.0, 4.0):
        per_sample = [
            kl(softmax([v / temperature for v in tr]), softmax([v / temperature for v in sr]))
            for sr, tr in zip(STUDENT_LOGITS, TEACHER_LOGITS)
        ]
        expected = temperature**2 * sum(per_sample) / 2
        assert kd_loss(s, t, temperature).item() == pytest.approx(expected, rel=1e-5)
    assert kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_logit_standardisation_hand_values_and_invariance():
    z = standardize_logits(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    root = math.sqrt(1.5)  # (z - 2) / sqrt(2/3), the population std
    assert z[0].tolist() == pytest.approx([-root, 0.0, root], rel=1e-5) and z[1].tolist() == [0.0, 0.0, 0.0]
    s, t = torch.tensor(STUDENT_LOGITS), torch.tensor(TEACHER_LOGITS)

    # KD on standardised logits, by hand: z-score each row, then T = 2.
    def zscore(row):
        mean = sum(row) / len(row)
        std = math.sqrt(sum((v - mean) ** 2 for v in row) / len(row))
        return [(v - mean) / std for v in row]

    per_sample = [
        kl(softmax([v / 2 for v in zscore(tr)]), softmax([v / 2 for v in zscore(sr)]))
        for sr, tr in zip(STUDENT_LOGITS, TEACHER_LOGITS)
    ]
    assert kd_loss(s, t, 2.0, logit_stand=True).item() == pytest.approx(4 * sum(per_sample) / 2, rel=1e-5)
    # Only the logits' shape matters: any shift and positive scale of the teacher gives the same loss.
    assert kd_loss(s, 10 * t - 3, 2.0, True).item() == pytest.approx(kd_loss(s, t, 2.0, True).item(), rel=1e-5)
    assert kd_loss(s, 10 * t - 3, 2.0).item() != pytest.approx(kd_loss(s, t, 2.0).item(), rel=1e-2)


def test_kd_distiller_weights_its_terms_and_reads_its_config_group():
    cfg = get_cfg()
    assert (cfg.KD.TEMPERATURE, cfg.KD.LOSS.CE_WEIGHT, cfg.KD.LOSS.KD_WEIGHT, cfg.KD.LOGIT_STAND) == (
        4,
        0.1,
        0.9,
        False,
    )
    cfg = load_cfg(None, ["DISTILLER.TYPE", "KD", "KD.LOSS.CE_WEIGHT", "0.5", "KD.TEMPERATURE", "2"])
    assert uses_teacher(cfg) and not uses_aspects(cfg)
    torch.manual_seed(0)
    student, teacher = TinyNet(3), TinyNet(3)
    kd = build_distiller(cfg, student, 3, 0, teacher)
    assert kd.name == "KD" and kd.temperature == 2.0
    batch = {"image": torch.randn(6, 4), "label": torch.tensor([0, 1, 2, 0, 1, 2])}
    kd.train()
    torch.manual_seed(1)
    logits, losses = kd(batch)
    torch.manual_seed(1)
    again = student(batch["image"])  # same dropout draw
    with torch.no_grad():
        target = teacher(batch["image"])
    assert torch.equal(logits, again) and set(losses) == {"loss_ce", "loss_kd"}
    ce = torch.nn.functional.cross_entropy(again, batch["label"])
    assert losses["loss_ce"].item() == pytest.approx(0.5 * ce.item(), rel=1e-6)
    assert losses["loss_kd"].item() == pytest.approx(0.9 * kd_loss(again, target, 2.0).item(), rel=1e-6)
    stand = load_cfg(None, ["DISTILLER.TYPE", "KD", "KD.LOGIT_STAND", "True", "KD.BASE_TEMPERATURE", "3"])
    assert build_distiller(stand, TinyNet(3), 3, 0, TinyNet(3)).temperature == 3.0
    with pytest.raises(ConfigError, match="KD.TEMPERATURE must be > 0"):
        load_cfg(None, ["DISTILLER.TYPE", "KD", "KD.TEMPERATURE", "0"])
    with pytest.raises(TeacherError, match="DISTILLER.TYPE KD needs a CNN teacher: set DISTILLER.TEACHER"):
        teacher_from_config(load_cfg(None, ["DISTILLER.TYPE", "KD"]), 3)


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason="official MaKD mirror not present")
def test_official_kd_yaml_loads_with_its_teacher_named(tmp_path):
    text = subprocess.run(
        ["git", "-C", str(OFFICIAL), "show", "HEAD:configs/cifar100/kd.yaml"], capture_output=True, text=True
    ).stdout
    assert 'TYPE: "KD"' in text
    file = tmp_path / "kd.yaml"
    file.write_text(text)
    cfg = load_cfg(str(file))
    assert cfg.DISTILLER.TEACHER == "resnet32x4" and cfg.KD.TEMPERATURE == 4.0


# --- DKD, MaKD_KD, MaKD_DKD ---------------------------------------------------------------------------

LABELS = [1, 2]


def hand_dkd(temperature: float) -> tuple[float, float]:
    """TCKD and NCKD of STUDENT_LOGITS vs TEACHER_LOGITS with LABELS, from their definitions."""
    tckd = nckd = 0.0
    for srow, trow, y in zip(STUDENT_LOGITS, TEACHER_LOGITS, LABELS):
        ps, pt = softmax([v / temperature for v in srow]), softmax([v / temperature for v in trow])
        tckd += kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        others = [j for j in range(3) if j != y]
        nckd += kl(softmax([trow[j] / temperature for j in others]), softmax([srow[j] / temperature for j in others]))
    return temperature**2 * tckd / 2, temperature**2 * nckd / 2


def test_dkd_terms_hand_values_and_the_decomposition_of_kd():
    s, t, y = torch.tensor(STUDENT_LOGITS), torch.tensor(TEACHER_LOGITS), torch.tensor(LABELS)
    for temperature in (1.0, 4.0):
        tckd, nckd = dkd_terms(s, t, y, temperature)
        expected_tckd, expected_nckd = hand_dkd(temperature)
        assert tckd.item() == pytest.approx(expected_tckd, rel=1e-5)
        assert nckd.item() == pytest.approx(expected_nckd, rel=1e-5)
    # The paper's identity, per sample: KD = TCKD + (1 - p_target of the teacher) x NCKD.
    for i in range(2):
        tckd, nckd = dkd_terms(s[i : i + 1], t[i : i + 1], y[i : i + 1], 2.0)
        p_target = softmax([v / 2 for v in TEACHER_LOGITS[i]])[LABELS[i]]
        kd = kd_loss(s[i : i + 1], t[i : i + 1], 2.0)
        assert kd.item() == pytest.approx((tckd + (1 - p_target) * nckd).item(), rel=1e-5)
    losses = dkd_losses(s, t, y, alpha=1.0, beta=8.0, temperature=4.0, warmup_factor=0.25)
    expected_tckd, expected_nckd = hand_dkd(4.0)
    assert losses["loss_tckd"].item() == pytest.approx(0.25 * expected_tckd, rel=1e-5)
    assert losses["loss_nckd"].item() == pytest.approx(0.25 * 8.0 * expected_nckd, rel=1e-5)
    # A confident teacher (p_target ~ 1) keeps TCKD finite.
    sure = torch.tensor([[0.0, 60.0, 0.0]])
    assert torch.isfinite(torch.stack(dkd_terms(sure, sure * 0.9, torch.tensor([1]), 1.0))).all()


def test_dkd_warm_up_follows_the_epoch():
    assert [dkd_warmup_factor(e, 20) for e in (1, 10, 20, 21)] == [0.05, 0.5, 1.0, 1.0]
    assert dkd_warmup_factor(1, 0) == 1.0
    cfg = load_cfg(None, ["DISTILLER.TYPE", "DKD", "DKD.WARMUP", "4"])
    assert (cfg.DKD.CE_WEIGHT, cfg.DKD.ALPHA, cfg.DKD.BETA, cfg.DKD.T) == (1.0, 1.0, 8.0, 4.0)
    assert get_cfg().DKD.WARMUP == 20
    torch.manual_seed(0)
    dkd = build_distiller(cfg, TinyNet(3), 3, 0, TinyNet(3)).eval()
    batch = {"image": torch.randn(4, 4), "label": torch.tensor([0, 1, 2, 1])}
    full = {}
    for epoch, factor in ((0, 0.25), (1, 0.5), (3, 1.0), (9, 1.0)):
        dkd.set_epoch(epoch)  # the trainer's 0-based epoch: the first epoch counts as 1
        _, losses = dkd(batch)
        full = full or {k: v / factor for k, v in losses.items() if k != "loss_ce"}
        for key in ("loss_tckd", "loss_nckd"):
            assert losses[key].item() == pytest.approx(factor * full[key].item(), rel=1e-5)
    with torch.no_grad():
        logits = dkd.student(batch["image"])
        tckd, nckd = dkd_terms(logits, dkd.teacher(batch["image"]), batch["label"], 4.0)
    assert full["loss_tckd"].item() == pytest.approx(tckd.item(), rel=1e-5)
    assert full["loss_nckd"].item() == pytest.approx(8.0 * nckd.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="DKD.WARMUP must be >= 0"):
        load_cfg(None, ["DISTILLER.TYPE", "DKD", "DKD.WARMUP", "-1"])


@pytest.mark.parametrize("method", ["MaKD_KD", "MaKD_DKD"])
def test_makd_with_kd_or_dkd_adds_the_teacher_term_to_makd_terms(method):
    cfg = load_cfg(None, ["DISTILLER.TYPE", method, "MaKD.ALPHA", "2.0", "KD.LOSS.KD_WEIGHT", "0.5", "DKD.BETA", "2"])
    assert uses_aspects(cfg) and uses_teacher(cfg)
    torch.manual_seed(0)
    distiller = build_distiller(cfg, TinyNet(3 + 2), 3, 2, TinyNet(3)).eval()
    assert distiller.head_outputs(3, 2) == 5
    batch = {"image": torch.randn(4, 4), "label": torch.tensor([0, 1, 2, 1]), "aspects": torch.rand(4, 2)}
    distiller.set_epoch(19)  # past DKD's 20-epoch warm-up
    class_logits, losses = distiller(batch)
    with torch.no_grad():
        logits, teacher = distiller.student(batch["image"]), distiller.teacher(batch["image"])
    assert torch.equal(class_logits, logits[:, :3])
    expected = makd_losses(logits, batch["label"], batch["aspects"], 3, 1.0, 2.0)
    if method == "MaKD_KD":
        expected["loss_kd"] = 0.5 * kd_loss(logits[:, :3], teacher, 4.0)
    else:
        expected.update(dkd_losses(logits[:, :3], teacher, batch["label"], 1.0, 2.0, 4.0))
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value.item(), rel=1e-5), key


# --- end to end: a teacher trained by the same command, then KD, then exact resume ------------------------

FAST = ["DATASET.IMAGE_SIZE", "32", "DATASET.RESIZE_RATIO", "1.0"]
METRIC_KEYS = ("test_top1_last", "test_top1_best", "best_epoch", "test_top5_last", "teacher_test_top1")


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_kd_end_to_end_with_a_trained_teacher_and_exact_resume(release_dataset):
    train_main = load_tool("our_train").main
    config, root = str(release_dataset["config"]), release_dataset["root"]
    teacher_dir = root / "teacher"
    common = [*FAST, "SOLVER.EPOCHS", "2"]
    assert train_main([config, *common, "DISTILLER.TYPE", "NONE", "OUTPUT_DIR", str(teacher_dir)]) == 0
    kd = [
        *common,
        "DISTILLER.TYPE", "KD",
        "DISTILLER.TEACHER", "resnet8x4",
        "DISTILLER.TEACHER_CHECKPOINT", str(teacher_dir / "student.pth"),
        "DISTILLER.STUDENT", "resnet20",
    ]  # fmt: skip
    assert train_main([config, *kd, "OUTPUT_DIR", str(root / "unbroken")]) == 0
    summary = _summary(root / "unbroken")
    assert summary["distiller"] == "KD" and summary["num_aspects"] == 0
    # Measured once, on the same test split and view: the teacher run's own last test top-1.
    assert summary["teacher_test_top1"] == _summary(teacher_dir)["test_top1_last"]
    rows = [json.loads(line) for line in (root / "unbroken" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train_loss_kd"] > 0 and r["train_loss_ce"] > 0 for r in rows)
    assert torch.load(root / "unbroken" / "student.pth", weights_only=False)["num_outputs"] == 3

    broken = root / "broken"
    assert train_main([config, *kd, "OUTPUT_DIR", str(broken), "--stop-after-epoch", "1"]) == 0
    assert train_main([config, *kd, "OUTPUT_DIR", str(broken), "--resume"]) == 0
    assert {k: _summary(broken)[k] for k in METRIC_KEYS} == {k: summary[k] for k in METRIC_KEYS}
    a = torch.load(broken / "student.pth", weights_only=False)["model"]
    b = torch.load(root / "unbroken" / "student.pth", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # MaKD_KD with the same teacher: C + Q head, all three terms logged, the same teacher score.
    makd_kd = root / "makd_kd"
    assert train_main([config, *kd, "DISTILLER.TYPE", "MaKD_KD", "SOLVER.EPOCHS", "1", "OUTPUT_DIR", str(makd_kd)]) == 0
    assert _summary(makd_kd)["teacher_test_top1"] == summary["teacher_test_top1"]
    assert _summary(makd_kd)["num_aspects"] == 5
    assert torch.load(makd_kd / "student.pth", weights_only=False)["num_outputs"] == 3 + 5
    row = json.loads((makd_kd / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(row[f"train_loss_{k}"] > 0 for k in ("ce", "aspect", "kd"))

    # DKD and MaKD_DKD through the same command: their terms are logged.
    for method, terms in (("DKD", ("ce", "tckd", "nckd")), ("MaKD_DKD", ("ce", "aspect", "tckd", "nckd"))):
        out = root / method
        assert train_main([config, *kd, "DISTILLER.TYPE", method, "SOLVER.EPOCHS", "1", "OUTPUT_DIR", str(out)]) == 0
        row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert all(row[f"train_loss_{k}"] > 0 for k in terms), row

    # Precomputed teacher logits (eval view, once): same teacher score, a different (augmentation-free) target.
    pre = root / "precomputed"
    assert (
        train_main([config, *kd, "DISTILLER.TEACHER_PRECOMPUTE", "True", "SOLVER.EPOCHS", "1", "OUTPUT_DIR", str(pre)])
        == 0
    )
    assert _summary(pre)["teacher_test_top1"] == summary["teacher_test_top1"]
    assert _summary(pre)["test_top1_last"] >= 0.0


def test_shipped_teacher_configs_point_at_the_run_that_trains_their_teacher():
    from makd.engine.trainer import run_dir_of

    repo = Path(__file__).resolve().parents[1]
    configs = {
        p: load_cfg(str(p))
        for p in sorted((repo / "configs").rglob("*.yaml"))
        if not p.name.startswith("_") and "studies" not in p.parts  # study files are not training configs
    }
    trains = {
        str(run_dir_of(cfg) / "student.pth"): cfg.DISTILLER.STUDENT
        for cfg in configs.values()
        if cfg.DISTILLER.TYPE == "NONE"
    }
    with_teacher = {p: cfg for p, cfg in configs.items() if uses_teacher(cfg)}
    assert len(with_teacher) >= 6 + 3 * 8  # CIFAR-100: 2 pairs x (KD, DKD, MaKD_KD); fine-grained: 8 sets x 3
    for path, cfg in with_teacher.items():
        assert trains.get(str(Path(cfg.DISTILLER.TEACHER_CHECKPOINT))) == cfg.DISTILLER.TEACHER, path


def test_declared_weights_are_those_forward_train_applies():
    """loss_weights: each returned term is the declared weight times its own loss (the epoch line divides by it)."""
    cfg = load_cfg(None, ["MaKD.ALPHA", "3.0", "MaKD.CE_WEIGHT", "0.5"])
    student = torch.nn.Linear(4, 2 + 3)
    distiller = build_distiller(cfg, student, 2, 3)
    batch = {"image": torch.randn(6, 4), "label": torch.tensor([0, 1, 0, 1, 0, 1]), "aspects": torch.rand(6, 3)}
    with torch.no_grad():
        _, losses = distiller(batch)
        logits = student(batch["image"])
    weights = distiller.loss_weights()
    assert weights == {"loss_ce": (0.5, "MaKD.CE_WEIGHT"), "loss_aspect": (3.0, "MaKD.ALPHA")}
    assert float(losses["loss_ce"]) / 0.5 == pytest.approx(float(class_cross_entropy(logits[:, :2], batch["label"])))
    assert float(losses["loss_aspect"]) / 3.0 == pytest.approx(float(aspect_bce(logits[:, 2:], batch["aspects"])))
    # DKD's terms carry the warm-up factor of the epoch: min((epoch + 1) / WARMUP, 1)
    weights = {"loss_ce": (1.0, "DKD.CE_WEIGHT"), "loss_tckd": (1.0, "DKD.ALPHA"), "loss_nckd": (8.0, "DKD.BETA")}
    assert warmed_up(weights, epoch=4, warmup=20) == {
        "loss_ce": (1.0, "DKD.CE_WEIGHT"),
        "loss_tckd": (0.25, "DKD.ALPHA x warm-up 0.25"),
        "loss_nckd": (2.0, "DKD.BETA x warm-up 0.25"),
    }
    assert warmed_up(weights, epoch=30, warmup=20) == weights


def test_every_methods_weight_keys_are_numbers_of_its_config():
    """loss_weights reads each declared key from the config: every method's keys (the MaKD_<X> combinations' too)
    must be numeric keys of the tree that method's DISTILLER.TYPE builds."""
    for cls in distiller_classes():
        cfg = load_cfg(None, ["DISTILLER.TYPE", cls.name])
        for name, key in cls.loss_weight_keys.items():
            value = config_value(cfg, key)
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (cls.name, name, key)
    assert distiller_class("MaKD_FitNet").loss_weight_keys["loss_aspect"] == "MaKD.ALPHA"
