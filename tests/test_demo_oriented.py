"""The oriented demo variant: the teacher's rule on the mirrored image changes exactly the orientation answers,
the files declare them flip-sensitive where the view policy reads them, and the files train for an epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ImageOps
from tool_modules import load_tool

from makd.config.defaults import load_cfg
from makd.data.transforms import View
from makd.data.views import view_policy_from_cfg
from makd.demo.oriented import (
    FLIP_MIRROR,
    FLIP_SENSITIVE,
    QUESTIONS,
    draw_spec,
    generate_oriented_demo,
    mirror_spec,
    oriented_classes,
    render_spec,
    spec_evidence,
)
from makd.formats.aspect_files import read_aspect_file
from makd.formats.files import read_sidecar, sha256_file
from makd.formats.questions import read_questions

REPO = Path(__file__).resolve().parents[1]
SMALL = {"train_per_class": 4, "test_per_class": 2}
SWAP = np.arange(len(QUESTIONS))
for _i, _j in FLIP_MIRROR:
    SWAP[_i], SWAP[_j] = _j, _i


@pytest.fixture(scope="module")
def oriented(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("oriented") / "data"
    generate_oriented_demo(out, seed=0, **SMALL)
    return out


def specs(n: int = 40):
    rng = np.random.default_rng(7)
    classes = oriented_classes()
    return [draw_spec(*classes[k % len(classes)], rng) for k in range(n)]


def test_the_rule_on_the_mirrored_image_changes_exactly_the_orientation_answers():
    for spec in specs():
        e, m = spec_evidence(spec), spec_evidence(mirror_spec(spec))
        twice = mirror_spec(mirror_spec(spec))
        assert (
            twice.facing == spec.facing
            and np.allclose(np.array(twice.dots).reshape(-1), np.array(spec.dots).reshape(-1))
            and twice.cx == pytest.approx(spec.cx)
        )
        fixed = [q for q in range(len(QUESTIONS)) if q not in FLIP_SENSITIVE]
        assert np.array_equal(m[fixed], e[fixed])  # glyph, size, background, ...: unchanged
        assert np.allclose(m[SWAP][:11], e[:11])  # left <-> right pairs swap
        assert m[11] == -e[11]  # "tilted clockwise" reverses
        assert e[0] == -e[1] and m[0] == e[1]  # the class's facing always changes
    changed = np.mean([(spec_evidence(s) > 0) != (spec_evidence(mirror_spec(s)) > 0) for s in specs()], axis=0)
    assert changed[0] == changed[1] == 1.0 and changed[[q for q in range(16) if q not in FLIP_SENSITIVE]].max() == 0


def test_the_mirrored_spec_draws_the_mirrored_image():
    for spec in specs(10):
        image = np.asarray(render_spec(spec, 28), dtype=np.float64)
        mirrored = np.asarray(render_spec(mirror_spec(spec), 28), dtype=np.float64)
        flipped = np.asarray(ImageOps.mirror(render_spec(spec, 28)), dtype=np.float64)
        assert np.abs(mirrored - flipped).mean() < 0.5  # grey levels 0-255: rasterisation differences only
        assert np.abs(image - flipped).mean() > 3.0  # a chiral glyph: mirroring changes the picture


def test_files_hold_the_unflipped_teacher_and_its_mirrored_rows(oriented):
    summary = json.loads((oriented / "dataset.json").read_text())
    assert summary["num_train"] == 40 and summary["num_classes"] == 10
    assert [q["flip_sensitive"] for q in summary["questions"]] == [i in FLIP_SENSITIVE for i in range(16)]
    own, flip = (
        read_aspect_file(oriented / "aspects_train.json"),
        read_aspect_file(oriented / "aspects_train.flip.json"),
    )
    truth = read_aspect_file(oriented / "truth_train.json")
    assert own.ids == flip.ids == truth.ids and len(own.ids) == 40
    assert read_sidecar(oriented / "aspects_train.flip.json")["view"] == "hflip"
    differs = np.abs(own.values - flip.values) > 1e-9
    assert not differs[:, [q for q in range(16) if q not in FLIP_SENSITIVE]].any()  # same noise draw
    assert differs[:, [0, 1]].all()
    # The teacher follows the truth of the unflipped image: P(yes) > 0.5 mostly where the answer is yes.
    assert ((own.values > 0.5) == (truth.values > 0.5)).mean() > 0.8
    assert ((flip.values > 0.5) == (truth.values > 0.5))[:, [0, 1]].mean() < 0.2
    again = generate_oriented_demo(oriented.parent / "again", seed=0, **SMALL)
    assert all(sha256_file(p) == sha256_file(Path(again["out_dir"]) / p.relative_to(oriented))
               for p in oriented.rglob("*") if p.is_file())  # fmt: skip


def test_the_view_policy_reads_the_sidecar_and_masks_exactly_those_questions(oriented):
    assert len(read_questions(oriented / "questions.txt")) == 16
    meta = json.loads((oriented / "questions.txt.meta.json").read_text())
    assert meta["flip_sensitive"] == ["q1", "q2", "q8", "q9", "q10", "q11", "q12"]  # 1-based, as the file's lines
    assert meta["flip_mirror"] == [["q1", "q2"], ["q8", "q9"], ["q10", "q11"]]
    cfg = load_cfg(str(REPO / "configs/demo/makd.yaml"), ["DATASET.QUESTIONS", str(oriented / "questions.txt")])
    policy = view_policy_from_cfg(cfg, 16)
    assert policy.flip_sensitive == list(FLIP_SENSITIVE) and policy.flip_mirror == list(FLIP_MIRROR)
    assert policy.sources == [f"{oriented / 'questions.txt'}.meta.json"]
    row = torch.from_numpy(read_aspect_file(oriented / "aspects_train.json").values[0]).float()
    targets, mask = policy.apply(row, View(hflip=True))
    assert torch.equal(targets, row) and torch.nonzero(mask == 0).flatten().tolist() == list(FLIP_SENSITIVE)
    assert policy.apply(row, View(hflip=False))[1].sum() == 16


def test_make_demo_writes_the_variant_and_it_trains_one_epoch(tmp_path, capsys):
    data = tmp_path / "data"
    argv = ["--variant", "oriented", "--out", str(data), "--train-per-class", "3", "--test-per-class", "2"]
    assert load_tool("make_demo").main(argv) == 0
    assert "30 train + 20 test grey images of 10 classes, 16 questions (7 flip-sensitive" in capsys.readouterr().out
    assert load_tool("make_demo").main(argv) == 2  # an existing folder is kept
    assert "--overwrite" in capsys.readouterr().err and len(list((data / "train").rglob("*.png"))) == 30
    assert load_tool("make_demo").main([*argv, "--class-teacher", "--overwrite"]) == 2
    assert "options of --variant default only" in capsys.readouterr().err
    out = tmp_path / "run"
    opts = ["DATASET.TRAIN_IMAGE_PATH", str(data / "train"), "DATASET.TEST_IMAGE_PATH", str(data / "test"),
            "DATASET.ASPECT_JSON", str(data / "aspects_train.json"), "DATASET.TEST_ASPECT_JSON",
            str(data / "aspects_test.json"), "DATASET.QUESTIONS", str(data / "questions.txt"), "DATASET.NUM_CLASS",
            "10", "DATASET.IMAGE_SIZE", "28", "MaKD.ASPECT_NUM", "0", "DISTILLER.STUDENT", "resnet8",
            "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "16", "NUM_THREADS", "1", "OUTPUT_DIR", str(out)]  # fmt: skip
    assert load_tool("our_train").main([str(REPO / "configs/demo/makd.yaml"), *opts]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_train_images"] == 30 and summary["num_aspects"] == 16
    views = summary["recipe"]["views"]
    # summary.json names them as the sidecar does: question numbers counted from 1
    assert views["flip_policy"] == "mask" and views["flip_sensitive"] == ["q1", "q2", "q8", "q9", "q10", "q11", "q12"]
    assert views["flip_mirror"] == [["q1", "q2"], ["q8", "q9"], ["q10", "q11"]]
