"""CNN teachers: every accepted weights file, the checks against the data, and the config rule."""

from __future__ import annotations

import pytest
import torch
from tool_modules import load_tool

from makd.config import load_cfg
from makd.models import build_student
from makd.models.teacher import TeacherError, load_teacher
from makd.tasks.classification import precompute_teacher_logits, teacher_from_config

C, Q = 3, 2
CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {"C": build_student("resnet20", C).eval(), "CQ": build_student("resnet20", C + Q).eval()}


def logits_of(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("layout", ["export", "export_cq", "checkpoint", "distiller", "plain", "ddp", "module"])
def test_every_teacher_file_layout_gives_the_class_logits(tmp_path, nets, layout):
    net = nets["CQ" if layout == "export_cq" else "C"]
    state = net.state_dict()
    contents = {
        "export": {"model": state, "student": "resnet20", "num_classes": C, "num_aspects": 0, "class_names": CLASSES},
        "export_cq": {"model": state, "student": "resnet20", "num_classes": C, "num_aspects": Q},
        "checkpoint": {"model": state, "optimizer": {}, "epoch": 3, "num_classes": C, "config": "x: 1\n"},
        # The whole distiller's state (a method's own modules, even another teacher, besides the student).
        "distiller": {
            "distiller": {
                **{f"student.{k}": v for k, v in state.items()},
                "teacher.model.fc.weight": torch.zeros(7, 7),
                "proj.weight": torch.zeros(2, 2),
            },
            "num_classes": C,
        },
        "plain": state,
        "ddp": {f"module.{k}": v for k, v in state.items()},
        "module": net,
    }[layout]
    path = tmp_path / "teacher.pth"
    torch.save(contents, path)
    teacher = load_teacher("resnet20", str(path), C, 32, CLASSES)
    x = torch.randn(4, 3, 32, 32)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert torch.equal(logits_of(teacher, x), logits_of(net, x)[:, :C])


def test_teacher_checks_fail_in_one_line(tmp_path, nets):
    path = tmp_path / "t.pth"
    torch.save({"model": nets["C"].state_dict(), "student": "resnet20", "num_classes": C, "class_names": CLASSES}, path)
    cases = [
        (lambda: load_teacher("resnet20", str(tmp_path / "none.pth"), C, 32), "does not exist; train the teacher"),
        (lambda: load_teacher("resnet20", str(path), 5, 32), "trained on 3 classes but the data has 5"),
        (lambda: load_teacher("resnet56", str(path), C, 32), "holds a 'resnet20' but DISTILLER.TEACHER is 'resnet56'"),
        (lambda: load_teacher("resnet20", str(path), C, 32, ["c", "b", "a"]), "names its classes differently"),
        (lambda: load_teacher("InternVL2-8B", str(path), C, 32), "DISTILLER.TEACHER 'InternVL2-8B' is not an arch"),
    ]
    plain = tmp_path / "plain.pth"
    torch.save(nets["C"].state_dict(), plain)
    cases += [
        (lambda: load_teacher("resnet56", str(plain), C, 32), "does not fit teacher local:resnet56: .*missing"),
        (lambda: load_teacher("resnet20", str(plain), 2, 32), "gives 3 outputs but the data has 2 classes"),
        (lambda: load_teacher("resnet8x4", str(plain), C, 32), "does not fit teacher local:resnet8x4"),
    ]
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    cases.append((lambda: load_teacher("resnet20", str(garbage), C, 32), "not a readable torch file"))
    for call, message in cases:
        with pytest.raises(TeacherError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


def test_teacher_only_for_methods_that_need_one_and_precomputed_rows(tmp_path, nets):
    # MaKD and NONE record DISTILLER.TEACHER (the MLLM's name by default) and build no CNN teacher.
    assert teacher_from_config(load_cfg(None), C) is None
    assert teacher_from_config(load_cfg(None, ["DISTILLER.TYPE", "NONE"]), C) is None
    path = tmp_path / "t.pth"
    torch.save(nets["C"].state_dict(), path)
    teacher = load_teacher("resnet20", str(path), C, 32)
    images = torch.randn(5, 3, 32, 32)
    dataset = [{"image": images[i], "label": 0} for i in range(5)]
    table = precompute_teacher_logits(teacher, dataset, batch_size=2, device=torch.device("cpu"))
    assert table.shape == (5, C) and torch.allclose(table, logits_of(teacher, images), atol=1e-5)


def test_demo_trains_its_teacher_once_and_distills_from_it(tmp_path, capsys):
    import json
    import shutil

    demo_tool = load_tool("demo")
    data, out = tmp_path / "data", tmp_path / "runs"
    argv = ["--data", str(data), "--out", str(out), "--train-per-class", "2", "--test-per-class", "1", "--seeds", "0",
            "--epochs", "1", "DATASET.CACHE_IMAGES", "False", "SOLVER.BATCH_SIZE", "16"]  # fmt: skip
    assert demo_tool.main([*argv, "--runs", "kd,makd_kd"]) == 0
    printed = capsys.readouterr().out
    teacher = json.loads((out / "teacher" / "summary.json").read_text())
    assert teacher["distiller"] == "NONE" and teacher["student"] == "wrn_40_2"
    for run in ("kd", "makd_kd"):  # each a condition of the demo's study, seed 0 only
        summary = json.loads((out / run / "seed0" / "summary.json").read_text())
        assert summary["teacher_test_top1"] == teacher["test_top1_last"]
        assert summary["num_aspects"] == (16 if run == "makd_kd" else 0)
        assert next(x for x in printed.splitlines() if x.startswith(f"| {run} | 1 | 0 |"))
    top1 = teacher["test_top1_last"]
    line = f"`wrn_40_2` trained with cross-entropy (seed 0, same data and schedule): test top-1 {top1:.2f}"
    assert line in (out / "table.md").read_text()
    stamp = (out / "teacher" / "student.pth").stat().st_mtime_ns
    # Reused while its config is unchanged; retrained when it changes.
    assert demo_tool.main([*argv, "--runs", "kd"]) == 0
    assert "already trained with this config: reused" in capsys.readouterr().out
    assert (out / "teacher" / "student.pth").stat().st_mtime_ns == stamp
    # another setting: the study refuses the kd folder of the old one (before any training), then trains both anew
    assert demo_tool.main([*argv, "--runs", "kd", "SOLVER.LR", "0.01"]) == 2
    assert "holds a run of another configuration (differs in SOLVER.LR)" in capsys.readouterr().err
    assert (out / "teacher" / "student.pth").stat().st_mtime_ns == stamp
    shutil.rmtree(out / "kd")
    assert demo_tool.main([*argv, "--runs", "kd", "SOLVER.LR", "0.01"]) == 0
    assert "trained with another config: training it again" in capsys.readouterr().out
