"""LaViD: per-class target table, its loss, training through tools/our_train.py (resume keeps the auxiliary head),
and MaKD on a converted per-class file = the class_mean control of a per-image file with the same class rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mirrors import mirror
from torch import nn

from makd.commands.aspects import main as aspects_main
from makd.config import load_cfg
from makd.data.build import build_data
from makd.distillers import build_distiller
from makd.distillers.lavid import LaViDDistiller, class_target_table
from makd.formats.aspect_files import write_aspect_file
from makd.formats.errors import ArtifactError
from tests.test_train_e2e import FAST, our_train

ROWS = {"abyssinian": [0.9, 0.1, 0.5], "American Bulldog": [0.2, 0.7, 0.4], "bengal": [0.6, 0.6, 0.1]}
DATASET_CLASSES = ["Abyssinian", "american_bulldog", "Bengal"]  # the release_dataset fixture's names


def _write(path: Path, rows: dict) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


class PooledNet(nn.Module):
    """Pool -> Linear: the pooled feature is the image's mean colour [B, 3]."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, outputs)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


def test_table_matches_names_case_and_underscore(tmp_path):
    table, info = class_target_table(_write(tmp_path / "c.json", ROWS), DATASET_CLASSES)
    assert torch.equal(table, torch.tensor([ROWS["abyssinian"], ROWS["American Bulldog"], ROWS["bengal"]]))
    assert info["targets_per_class"] == 3 and info["unused_file_classes"] == []


def test_multiple_choice_rows_flatten_row_major(tmp_path):
    mcq = {name: [[0.1, 0.9], [0.2, 0.3, 0.5]] for name in ("abyssinian", "american bulldog", "bengal", "sphynx")}
    mcq["bengal"] = [[0.6, 0.4], [0.0, 1.0, 0.0]]
    table, info = class_target_table(_write(tmp_path / "m.json", mcq), DATASET_CLASSES)
    assert table.shape == (3, 5) and table[2].tolist() == pytest.approx([0.6, 0.4, 0.0, 1.0, 0.0])
    assert info["options_per_question"] == [2, 3] and info["unused_file_classes"] == ["sphynx"]


def test_a_class_without_a_row_is_named(tmp_path):
    rows = {k: v for k, v in ROWS.items() if k != "bengal"}
    with pytest.raises(ArtifactError, match=r"1 class\(es\) of the dataset have no row: 'Bengal'.*LaViD.CLASS_MAP"):
        class_target_table(_write(tmp_path / "c.json", rows), DATASET_CLASSES)


def test_loss_is_ce_plus_lambda_mse_of_the_aux_head_on_pooled_features(tmp_path):
    torch.manual_seed(0)
    table = torch.tensor(list(ROWS.values()))
    distiller = LaViDDistiller(PooledNet(3), 3, table, lam=7.0, ce_weight=0.5)
    assert distiller.aux_head.in_features == 3 and distiller.aux_head.out_features == 3
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 2, 1, 2])
    logits, losses = distiller.forward_train({"image": images, "label": labels})
    pooled = images.mean(dim=(2, 3))
    expected_mse = ((distiller.aux_head(pooled) - table[labels]) ** 2).mean()
    assert torch.allclose(losses["loss_lavid"], 7.0 * expected_mse)
    assert torch.allclose(losses["loss_ce"], 0.5 * nn.functional.cross_entropy(logits, labels))
    assert logits.shape == (4, 3)
    # the head is trainable state of the distiller; the table is not saved (re-read from the file)
    keys = set(distiller.state_dict())
    assert {"aux_head.weight", "aux_head.bias"} <= keys and "class_targets" not in keys
    assert any(p is distiller.aux_head.weight for p in distiller.learnable_parameters())


def test_build_distiller_passes_class_names(tmp_path):
    path = _write(tmp_path / "c.json", ROWS)
    cfg = load_cfg(None, ["DISTILLER.TYPE", "LaViD", "LaViD.CLASS_TARGETS", str(path), "LaViD.LAMBDA", "40"])
    distiller = build_distiller(cfg, PooledNet(3), 3, 0, None, DATASET_CLASSES)
    assert distiller.lam == 40.0 and distiller.class_targets.shape == (3, 3)
    assert distiller.head_outputs(3, 50) == 3  # the class head stays C wide


def _lavid_args(release_dataset, targets: Path, out: Path) -> list[str]:
    return [str(release_dataset["config"]), *FAST, "DISTILLER.TYPE", "LaViD", "LaViD.CLASS_TARGETS", str(targets),
            "LaViD.LAMBDA", "2", "DATASET.ASPECT_JSON", "", "SOLVER.EPOCHS", "2", "OUTPUT_DIR", str(out)]  # fmt: skip


def test_lavid_trains_and_resume_keeps_the_aux_head(release_dataset):
    targets = _write(release_dataset["root"] / "class_targets.json", ROWS)
    unbroken, broken = release_dataset["root"] / "unbroken", release_dataset["root"] / "broken"
    assert our_train.main(_lavid_args(release_dataset, targets, unbroken)) == 0
    summary = json.loads((unbroken / "summary.json").read_text())
    assert summary["distiller"] == "LaViD" and summary["num_aspects"] == 0
    rows = [json.loads(line) for line in (unbroken / "metrics.jsonl").read_text().splitlines()]
    assert "loss_lavid" in json.dumps(rows[0])
    assert our_train.main([*_lavid_args(release_dataset, targets, broken), "--stop-after-epoch", "1"]) == 0
    after_one = torch.load(broken / "latest.pth", weights_only=False)
    assert our_train.main([*_lavid_args(release_dataset, targets, broken), "--resume"]) == 0
    a = torch.load(broken / "latest.pth", weights_only=False)["distiller_extra"]
    b = torch.load(unbroken / "latest.pth", weights_only=False)["distiller_extra"]
    assert set(a) == {"aux_head.weight", "aux_head.bias"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(after_one["distiller_extra"]["aux_head.weight"], a["aux_head.weight"])  # it trained on
    assert json.loads((broken / "summary.json").read_text())["test_top1_last"] == summary["test_top1_last"]


def test_lavid_missing_class_is_one_line(release_dataset, capsys):
    targets = _write(release_dataset["root"] / "partial.json", {k: ROWS[k] for k in ("abyssinian", "bengal")})
    assert our_train.main(_lavid_args(release_dataset, targets, release_dataset["root"] / "x")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "'american_bulldog'" in err[-1]


def test_makd_on_converted_class_file_equals_class_mean_of_per_image_file(release_dataset):
    root = release_dataset["root"]
    class_file = _write(root / "per_class.json", ROWS)
    converted = root / "converted.json"
    assert aspects_main(["convert", str(class_file), "--out", str(converted), "--images", str(root / "train"),
                         "--level", "class"]) == 0  # fmt: skip
    # a per-image file whose class means are the same rows: each class's images get +d / -d around its row
    by_class = dict(zip(DATASET_CLASSES, ROWS.values()))
    rng = np.random.default_rng(0)
    per_image = {}
    for cls in DATASET_CLASSES:
        ids = [i for i in release_dataset["train_ids"] if i.rsplit("_", 2)[0] == cls]
        for a, b in zip(ids[0::2], ids[1::2]):
            d = rng.uniform(-0.05, 0.05, 3)
            per_image[a], per_image[b] = (np.array(by_class[cls]) + d).tolist(), (np.array(by_class[cls]) - d).tolist()
    noisy = root / "per_image.json"
    write_aspect_file(noisy, per_image)
    common = ["MaKD.ASPECT_NUM", "3", "DATASET.CHECK_IMAGES", "False"]
    teacher = build_data(load_cfg(str(release_dataset["config"]), [*common, "DATASET.ASPECT_JSON", str(converted)]))
    control = build_data(
        load_cfg(
            str(release_dataset["config"]), [*common, "DATASET.ASPECT_JSON", str(noisy), "MaKD.TARGETS", "class_mean"]
        )
    )
    direct = build_data(load_cfg(str(release_dataset["config"]), [*common, "DATASET.ASPECT_JSON", str(class_file)]))
    assert direct.aspect_sources[0]["kind"] == "per_class"  # recognised by its keys: no conversion needed
    assert torch.equal(direct.train.targets, teacher.train.targets)
    assert teacher.train.index.ids == control.train.index.ids
    assert torch.abs(teacher.train.targets - control.train.targets).max() < 1e-6
    assert torch.abs(control.train.targets[0] - torch.tensor(by_class["Abyssinian"])).max() < 1e-6


def test_empty_or_missing_target_file_is_a_config_error(tmp_path):
    from makd.errors import ConfigError

    for value, message in (("", "is empty"), (str(tmp_path / "none.json"), "does not exist")):
        cfg = load_cfg(None, ["DISTILLER.TYPE", "LaViD", "LaViD.CLASS_TARGETS", value])
        with pytest.raises(ConfigError, match=message):
            build_distiller(cfg, PooledNet(3), 3, 0, None, DATASET_CLASSES)


# ----------------------------------------------------------------------------- per-class files end to end
LAVID_MIRROR = mirror("lliangthomas/lavid")
PETS_FILES = (
    "questions/oxfordpets/logits/internvl2_text.json",
    "questions/oxfordpets/logits/qwen2.5-7b_chat_50-5.json",
)


def _class_folders(root: Path, classes: list[str], per_class: int, seed: int) -> None:
    """root/<class name as written in the file>/<i>.png, tiny images whose colour depends on the class."""
    from tests.conftest import draw_image

    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_image(rng, label, size=12).save(root / name / f"{i}.png")


def _train_makd_and_lavid(root: Path, class_file: Path, per_class: int = 2) -> dict[str, dict]:
    """Train MaKD (on the file converted to image level, and on the file itself) and LaViD for one epoch each."""
    classes = list(json.loads(class_file.read_text()))
    _class_folders(root / "train", classes, per_class, 0)
    _class_folders(root / "test", classes, 1, 1)
    converted = root / "converted.json"
    assert aspects_main(["convert", str(class_file), "--out", str(converted), "--images", str(root / "train")]) == 0
    width = len(next(iter(json.loads(converted.read_text()).values())))
    common = [*FAST, "DATASET.TYPE", "image_folder", "DATASET.TRAIN_IMAGE_PATH", str(root / "train"),
              "DATASET.TEST_IMAGE_PATH", str(root / "test"), "DATASET.NUM_WORKERS", "0",
              "DISTILLER.STUDENT", "resnet8x4", "SOLVER.EPOCHS", "1", "SOLVER.BATCH_SIZE", "16", "SOLVER.LR", "0.01",
              "LOG.TENSORBOARD_FREQ", "100"]  # fmt: skip
    runs = {
        "MaKD": ["DISTILLER.TYPE", "MaKD", "DATASET.ASPECT_JSON", str(converted), "MaKD.ASPECT_NUM", str(width)],
        "LaViD": ["DISTILLER.TYPE", "LaViD", "LaViD.CLASS_TARGETS", str(class_file)],
        "MaKD_direct": ["DISTILLER.TYPE", "MaKD", "DATASET.ASPECT_JSON", str(class_file)],  # the file itself
    }
    config = root / "base.yaml"
    config.write_text("EXPERIMENT:\n  PROJECT: per_class\nLOG:\n  WANDB: False\n", encoding="utf-8")
    summaries = {}
    for name, extra in runs.items():
        out = root / name
        assert our_train.main([str(config), *common, *extra, "OUTPUT_DIR", str(out)]) == 0, name
        summaries[name] = json.loads((out / "summary.json").read_text())
        counts = (summaries[name]["num_classes"], summaries[name]["num_train_images"])
        assert counts == (len(classes), per_class * len(classes))
    assert summaries["MaKD"]["num_aspects"] == summaries["MaKD_direct"]["num_aspects"] == width
    kind = summaries["MaKD_direct"]["aspect_sources"][0]["kind"]
    assert kind == ("multiple_choice" if isinstance(next(iter(json.loads(class_file.read_text()).values()))[0], list)
                    else "per_class")  # fmt: skip
    return summaries


def test_small_yes_no_and_choice_files_train_with_makd_and_lavid(tmp_path):
    names = ["Great Pyrenees", "pug", "shiba inu"]
    yes_no = _write(tmp_path / "yn.json", {n: [0.1 + 0.3 * i, 0.8 - 0.2 * i] for i, n in enumerate(names)})
    choice = _write(tmp_path / "mc.json", {n: [[0.5, 0.5], [0.2 * i, 1 - 0.2 * i, 0.0]] for i, n in enumerate(names)})
    assert _train_makd_and_lavid(tmp_path / "yn", yes_no)["MaKD"]["num_aspects"] == 2
    assert _train_makd_and_lavid(tmp_path / "mc", choice)["MaKD"]["num_aspects"] == 5


@pytest.mark.skipif(not LAVID_MIRROR.is_dir(), reason="the LaViD mirror is not on this machine")
@pytest.mark.parametrize("path", PETS_FILES)
def test_published_lavid_pet_files_train_with_makd_and_lavid(tmp_path, path):
    import subprocess

    data = subprocess.run(["git", "-C", str(LAVID_MIRROR), "show", f"HEAD:{path}"], capture_output=True, check=True)
    class_file = tmp_path / Path(path).name
    class_file.write_bytes(data.stdout)
    rows = json.loads(data.stdout)
    assert len(rows) == 37
    summaries = _train_makd_and_lavid(tmp_path, class_file, per_class=1)
    assert summaries["MaKD"]["num_aspects"] == (50 if path.endswith("_text.json") else 250)


def test_shipped_lavid_configs_carry_lavids_lambda_per_dataset():
    repo = Path(__file__).resolve().parents[1]
    expected = {"cub200": 40, "caltech101": 20, "flowers102": 50, "fgvc_aircraft": 50, "oxford_pets": 50,
                "stanford_cars": 40}  # fmt: skip
    for dataset, lam in expected.items():
        cfg = load_cfg(str(repo / "configs/fine_grained" / dataset / "resnet18_lavid.yaml"))
        assert (cfg.DISTILLER.TYPE, cfg.LaViD.LAMBDA, cfg.SOLVER.EPOCHS) == ("LaViD", lam, 240)
        assert dataset in cfg.LaViD.CLASS_TARGETS


def test_lavid_kd_adds_the_kd_term_to_lavids_two(tmp_path):
    from makd.distillers.kd import kd_loss

    path = _write(tmp_path / "c.json", ROWS)
    cfg = load_cfg(None, ["DISTILLER.TYPE", "LaViD_KD", "LaViD.CLASS_TARGETS", str(path), "LaViD.LAMBDA", "3",
                          "KD.TEMPERATURE", "2", "KD.LOSS.KD_WEIGHT", "0.7"])  # fmt: skip
    torch.manual_seed(0)
    teacher = PooledNet(3)
    distiller = build_distiller(cfg, PooledNet(3), 3, 0, teacher, DATASET_CLASSES)
    assert distiller.needs_teacher and distiller.needs_class_targets and distiller.head_outputs(3, 9) == 3
    batch = {"image": torch.rand(4, 3, 8, 8), "label": torch.tensor([0, 1, 2, 1])}
    logits, losses = distiller.forward_train(batch)
    assert set(losses) == {"loss_ce", "loss_lavid", "loss_kd"}
    with torch.no_grad():
        expected = 0.7 * kd_loss(logits, teacher(batch["image"]), 2.0)
    assert losses["loss_kd"].item() == pytest.approx(expected.item(), rel=1e-6)
    pooled = batch["image"].mean(dim=(2, 3))
    mse = ((distiller.aux_head(pooled) - distiller.class_targets[batch["label"]]) ** 2).mean()
    assert losses["loss_lavid"].item() == pytest.approx(3 * mse.item(), rel=1e-6)
    assert not any(k.startswith("teacher.") and v.requires_grad for k, v in distiller.named_parameters())


def test_stage2_class_level_output_trains_lavid_and_makd(tmp_path):
    """Stage 2 --level class on a tiny random causal LM writes a file that stage 3 trains on, both ways."""
    from makd.commands.stage2 import main as stage2_main
    from makd.demo.tiny_causal_lm import build_tiny_causal_lm

    model = build_tiny_causal_lm(tmp_path / "lm")
    classes = tmp_path / "classes.txt"
    classes.write_text("Great Pyrenees\npug\nshiba inu\n", encoding="utf-8")
    questions = tmp_path / "questions.txt"
    questions.write_text(
        "How large is a <object>? | Small | Medium | Large\nWhat coat has a <object>? | Short | Long\n"
    )
    out = tmp_path / "class_targets.json"
    assert stage2_main(["--level", "class", "--model", str(model), "--classes", str(classes), "--questions",
                        str(questions), "--output", str(out), "--device", "cpu"]) == 0  # fmt: skip
    rows = json.loads(out.read_text())
    assert [len(d) for d in rows["pug"]] == [3, 2]
    summaries = _train_makd_and_lavid(tmp_path / "train", out)
    assert summaries["MaKD"]["num_aspects"] == 5
