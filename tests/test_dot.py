"""DOT (SOLVER.TRAINER dot): the two-momentum update by hand, SGD's update when delta is 0, the task and the
distillation gradients taken apart, the config's refusals, and a KD run that trains and resumes exactly."""

from __future__ import annotations

import pytest
import torch
from tool_modules import load_tool

from makd.config import ConfigError, load_cfg
from makd.engine.dot_optimizer import DistillationOrientedSGD
from makd.engine.optim import build_optimizer
from makd.models import build_student


def test_two_momenta_by_hand_for_parameters_both_or_one_loss_reaches():
    shared, task_only, kd_only = (torch.nn.Parameter(torch.tensor([1.0, -2.0])) for _ in range(3))
    optimizer = DistillationOrientedSGD(
        [shared, task_only, kd_only], lr=0.1, momentum=0.9, delta=0.05, weight_decay=0.01
    )
    values = {"shared": shared.detach().clone(), "task": task_only.detach().clone(), "kd": kd_only.detach().clone()}
    buffers: dict = {}
    for step in range(3):
        x = torch.tensor([0.5 + step, 1.5])
        losses = {
            "loss_ce": (shared * x).sum() ** 2 + (task_only * x).sum(),
            "loss_kd": (shared**2 * x).sum() + kd_only.pow(3).sum(),
        }
        optimizer.backward(losses)
        optimizer.step()
        # by hand: each loss's gradient, weight decay on the task one (or the only one), momenta 0.85 / 0.95 / 0.9
        s, t, k = values["shared"], values["task"], values["kd"]
        g_task_s = 2 * (s * x).sum() * x + 0.01 * s
        g_kd_s = 2 * s * x
        g_task_t = x + 0.01 * t
        g_kd_k = 3 * k**2 + 0.01 * k
        for name, grad, mom in (
            ("ts", g_task_s, 0.85),
            ("ks", g_kd_s, 0.95),
            ("tt", g_task_t, 0.9),
            ("kk", g_kd_k, 0.9),
        ):
            buffers[name] = grad.clone() if step == 0 else mom * buffers[name] + grad
        values = {
            "shared": s - 0.1 * (buffers["ts"] + buffers["ks"]),
            "task": t - 0.1 * buffers["tt"],
            "kd": k - 0.1 * buffers["kk"],
        }
        for name, p in (("shared", shared), ("task", task_only), ("kd", kd_only)):
            assert torch.allclose(p.detach(), values[name], atol=1e-6), (step, name)
    assert set(optimizer.state[shared]) == {"task_momentum", "distillation_momentum"}
    assert set(optimizer.state[task_only]) == {"task_momentum"} and set(optimizer.state[kd_only]) == {
        "distillation_momentum"
    }


def test_with_delta_zero_it_is_sgd_on_the_summed_loss():
    torch.manual_seed(0)
    a, b = build_student("resnet8", 4, input_family="cifar"), build_student("resnet8", 4, input_family="cifar")
    b.load_state_dict(a.state_dict())
    dot = DistillationOrientedSGD(a.parameters(), lr=0.05, momentum=0.9, delta=0.0, weight_decay=5e-4)
    sgd = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        target = torch.randn(4, 4)
        for net, opt in ((a, dot), (b, sgd)):
            out = net(x)
            losses = {"loss_ce": torch.nn.functional.cross_entropy(out, y), "loss_kd": (out - target).pow(2).mean()}
            if opt is dot:
                opt.backward(losses)
            else:
                opt.zero_grad()
                sum(losses.values()).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_dot_settings_are_checked():
    base = ["DISTILLER.TYPE", "KD", "SOLVER.TRAINER", "dot"]
    cfg = load_cfg(None, base)
    assert cfg.SOLVER.DOT.DELTA == 0.075
    assert isinstance(build_optimizer(cfg, torch.nn.Linear(2, 2)), DistillationOrientedSGD)
    with pytest.raises(ConfigError, match=r"^SOLVER.TRAINER dot splits the task and the distillation gradients, but"):
        load_cfg(None, ["DISTILLER.TYPE", "NONE", "SOLVER.TRAINER", "dot"])
    with pytest.raises(ConfigError, match=r"^SOLVER.DOT.DELTA 0.2 with SOLVER.MOMENTUM 0.9: the momenta"):
        load_cfg(None, [*base, "SOLVER.DOT.DELTA", "0.2"])
    with pytest.raises(ConfigError, match=r"^SOLVER.TRAINER dot is DOT's SGD with two momenta: set SOLVER.TYPE SGD"):
        build_optimizer(load_cfg(None, [*base, "SOLVER.TYPE", "AdamW"]), torch.nn.Linear(2, 2))


our_train = load_tool("our_train")


def test_a_dot_kd_run_trains_and_resumes_exactly(release_dataset):
    root = release_dataset["root"]
    teacher = root / "teacher.pth"
    torch.manual_seed(1)
    torch.save(build_student("resnet14", 3, input_family="cifar").state_dict(), teacher)
    common = [
        str(release_dataset["config"]),
        *("DISTILLER.TYPE", "KD", "DISTILLER.STUDENT", "resnet8", "DISTILLER.TEACHER", "resnet14"),
        *("DISTILLER.TEACHER_CHECKPOINT", str(teacher), "SOLVER.TRAINER", "dot", "SOLVER.EPOCHS", "2"),
        *("DATASET.IMAGE_SIZE", "16", "DATASET.RESIZE_RATIO", "1.0", "DATASET.CHECK_IMAGES", "False"),
    ]
    assert our_train.main([*common, "OUTPUT_DIR", str(root / "unbroken")]) == 0
    assert our_train.main([*common, "OUTPUT_DIR", str(root / "broken"), "--stop-after-epoch", "1"]) == 0
    assert our_train.main([*common, "OUTPUT_DIR", str(root / "broken"), "--resume"]) == 0
    a = torch.load(root / "unbroken" / "latest.pth", weights_only=False)
    b = torch.load(root / "broken" / "latest.pth", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    states = a["optimizer"]["state"]
    assert states and all({"task_momentum", "distillation_momentum"} <= set(s) for s in states.values())
    for key, state in states.items():
        for name in ("task_momentum", "distillation_momentum"):
            assert torch.equal(state[name], b["optimizer"]["state"][key][name])
