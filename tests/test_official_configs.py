"""Official configs: methods makd lacks stop by name, official dataset names read image folders, and the counter."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from mirrors import mirror
from test_data_helpers import make_cfg, write_class_folders, write_release
from tool_modules import load_tool

from makd.config import ConfigError, MethodNotImplementedError, load_cfg
from makd.data.layouts import build_image_indexes
from makd.distillers import distiller_classes
from makd.formats.errors import DatasetMissingError

REPO = Path(__file__).resolve().parents[1]
MAKD_MIRROR = mirror("taegyeong-lee/MaKD-Multi-aspect-knowledge-distillation-with-Large-Language-Model")


def write_yaml(path: Path, data: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return str(path)


# An mdistiller-shaped file for a method this project lacks (SSKD, Xu et al. 2020): its own key group (SSKD.*) and
# trainer, as mdistiller's crd.yaml had before makd implemented CRD.
UNKNOWN_METHOD = {
    "EXPERIMENT": {"NAME": "", "TAG": "sskd,res32x4,res8x4", "PROJECT": "cifar100_baselines"},
    "DISTILLER": {"TYPE": "SSKD", "TEACHER": "resnet32x4", "STUDENT": "resnet8x4"},
    "SOLVER": {"BATCH_SIZE": 64, "EPOCHS": 240, "LR": 0.05, "TYPE": "SGD", "TRAINER": "sskd"},
    "SSKD": {"LOSS": {"FEAT_WEIGHT": 1.0}},
}


def test_a_method_makd_lacks_stops_with_one_line_naming_it_before_its_keys_merge(tmp_path):
    path = write_yaml(tmp_path / "sskd.yaml", UNKNOWN_METHOD)
    with pytest.raises(MethodNotImplementedError) as info:
        load_cfg(path)
    message = str(info.value)
    implemented = ", ".join(cls.name for cls in distiller_classes())
    assert (
        message
        == f"{path}: DISTILLER.TYPE 'SSKD' is unknown (a method makd does not implement); implemented: {implemented}"
    )
    assert "unknown config key" not in message and isinstance(info.value, ConfigError)


def test_the_command_line_method_wins_over_the_file(tmp_path):
    plain = write_yaml(tmp_path / "plain.yaml", {"DISTILLER": {"TYPE": "NONE", "STUDENT": "resnet8"}})
    with pytest.raises(MethodNotImplementedError, match=r"^command line: DISTILLER.TYPE 'SSKD' is unknown \(a method"):
        load_cfg(plain, ["DISTILLER.TYPE", "SSKD"])
    only_type = write_yaml(tmp_path / "sskd.yaml", {"DISTILLER": {"TYPE": "SSKD"}})
    assert load_cfg(only_type, ["DISTILLER.TYPE", "NONE"]).DISTILLER.TYPE == "NONE"
    assert load_cfg(plain, ["DISTILLER.TYPE", "makd"]).DISTILLER.TYPE == "makd"  # registry names: any case


def test_a_trainer_makd_lacks_stops_by_name_and_the_official_makd_trainer_loads(tmp_path):
    # MLKD's repository trains its two-view method with SOLVER.TRAINER "ours"; makd's MLKD is DISTILLER.TYPE MLKD
    ours = {"DISTILLER": {"TYPE": "KD"}, "SOLVER": {"TRAINER": "ours"}}
    with pytest.raises(
        MethodNotImplementedError,
        match=r"SOLVER.TRAINER 'ours' is unknown \(a method makd does not implement: OURS\); implemented trainers: b",
    ):
        load_cfg(write_yaml(tmp_path / "ours.yaml", ours))
    assert load_cfg(write_yaml(tmp_path / "m.yaml", {"SOLVER": {"TRAINER": "makd"}})).SOLVER.TRAINER == "makd"


def test_other_unknown_keys_still_fail_as_unknown_keys(tmp_path):
    path = write_yaml(tmp_path / "typo.yaml", {"DISTILLER": {"TYPE": "NONE"}, "SOLVR": {"LR": 0.1}})
    with pytest.raises(ConfigError, match=r"unknown config key SOLVR; did you mean SOLVER\?") as info:
        load_cfg(path)
    assert not isinstance(info.value, MethodNotImplementedError)


@pytest.mark.parametrize("kind", ["oxfordpets", "caltech101", "cub200", "flowers", "dtd", "stanfordcars", "aircraft"])
def test_official_dataset_names_with_image_paths_read_the_release_folders(tmp_path, kind):
    names = ["Abyssinian", "american_bulldog", "Bengal"]
    train_ids = write_release(tmp_path / "train", names, 2)
    write_release(tmp_path / "test", names, 1, seed=1)
    settings = {"DATASET.TRAIN_IMAGE_PATH": str(tmp_path / "train"), "DATASET.TEST_IMAGE_PATH": str(tmp_path / "test")}
    train, test = build_image_indexes(make_cfg({"DATASET.TYPE": kind, **settings}))
    assert train.source.startswith("release_png") and test.source.startswith("release_png")
    assert (train.ids, train.class_names) == (train_ids, names)
    assert train.labels == [names.index(i.rsplit("_", 2)[0]) for i in train_ids]  # the second-to-last field
    assert sorted(test.labels) == [0, 1, 2]


def test_official_dataset_names_accept_class_folders_too(tmp_path):
    write_class_folders(tmp_path / "train", {"n01": 2, "n02": 1})
    write_class_folders(tmp_path / "test", {"n01": 1, "n02": 1}, seed=1)
    cfg = make_cfg(
        {
            "DATASET.TYPE": "imagenet",
            "DATASET.TRAIN_IMAGE_PATH": str(tmp_path / "train"),
            "DATASET.TEST_IMAGE_PATH": str(tmp_path / "test"),
        }
    )
    train, _ = build_image_indexes(cfg)
    assert train.source.startswith("image_folder") and train.labels == [0, 0, 1]


def test_official_dataset_names_without_image_paths(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^DATASET.TYPE oxfordpets reads image folders: set DATASET.TRAIN_IMAGE_PATH"
    ):
        build_image_indexes(make_cfg({"DATASET.TYPE": "oxfordpets"}))
    # A name torchvision also knows stays torchvision's dataset under DATASET.ROOT when no folder is given.
    with pytest.raises(DatasetMissingError, match=r"DATASET.TYPE cifar100: no data at .*DATASET.ROOT"):
        build_image_indexes(make_cfg({"DATASET.TYPE": "cifar100", "DATASET.ROOT": str(tmp_path)}))


# ---------------------------------------------------------------- the counting command


def test_the_counter_trains_refuses_and_fails_each_file_with_one_line(tmp_path, capsys):
    configs = tmp_path / "configs"
    # mdistiller's CIFAR-100 shape: no DATASET section (the dataset is the folder), its CIFAR-table student.
    write_yaml(
        configs / "cifar100" / "vanilla_mv2.yaml",
        {
            "EXPERIMENT": {"NAME": "", "TAG": "vanilla,mv2", "PROJECT": "cifar100_baselines"},
            "DISTILLER": {"TYPE": "NONE", "TEACHER": "ResNet50", "STUDENT": "MobileNetV2"},
            "SOLVER": {"BATCH_SIZE": 64, "EPOCHS": 240, "LR": 0.01, "LR_DECAY_STAGES": [150, 180, 210]},
        },
    )
    # The MaKD fine-grained shape: official DATASET.TYPE, one folder for train and test, aspect keys.
    write_yaml(
        configs / "fine_grained" / "makd.yaml",
        {
            "DATASET": {
                "TYPE": "oxfordpets",
                "NUM_CLASS": 3,
                "ASPECT_JSON": "oxfordpets.json",
                "TRAIN_IMAGE_PATH": "oxfordpets",
                "TEST_IMAGE_PATH": "oxfordpets",
                "IMAGE_SIZE": 16,
                "TEST": {"BATCH_SIZE": 4},
            },
            "DISTILLER": {"TYPE": "MaKD", "TEACHER": "", "STUDENT": "resnet8"},
            "SOLVER": {"BATCH_SIZE": 4, "EPOCHS": 240, "TRAINER": "makd"},
            "MaKD": {"ASPECT_NUM": 5, "TEMPERATURE": 1, "ALPHA": 4.0, "CE_WEIGHT": 1.0},
        },
    )
    write_yaml(configs / "cifar100" / "sskd.yaml", UNKNOWN_METHOD)
    # A feature method: its random teacher gets BatchNorm statistics of the generated images.
    write_yaml(
        configs / "cifar100" / "at.yaml",
        {"DISTILLER": {"TYPE": "AT", "TEACHER": "resnet14", "STUDENT": "resnet8"}, "SOLVER": {"BATCH_SIZE": 64}},
    )
    write_yaml(configs / "cifar100" / "typo.yaml", {"DISTILLER": {"TYPE": "NONE"}, "SOLVR": {"LR": 0.1}})

    code = load_tool("check_official_configs").main(
        [str(configs), "--work", str(tmp_path / "work"), "--max-batch", "16"]
    )
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split(None, 2)[1:]
        for line in out.splitlines()
        if line.endswith((".yaml",)) or ".yaml " in line
    }
    assert rows["cifar100/vanilla_mv2.yaml"][0] == "train"
    assert "1 epoch, NONE MobileNetV2, C=100" in rows["cifar100/vanilla_mv2.yaml"][1]
    assert rows["fine_grained/makd.yaml"][0] == "train" and "MaKD resnet8, C=3" in rows["fine_grained/makd.yaml"][1]
    assert rows["cifar100/sskd.yaml"] == [
        "refuse",
        "DISTILLER.TYPE 'SSKD' is unknown (a method makd does not implement); implemented: "
        + ", ".join(cls.name for cls in distiller_classes()),
    ]
    assert rows["cifar100/typo.yaml"][0] == "fail" and "unknown config key SOLVR" in rows["cifar100/typo.yaml"][1]
    assert out.rstrip().endswith("5 YAML files: 3 load, 3 train 1 epoch, 1 refuse (method not implemented), 1 fail")
    assert rows["cifar100/at.yaml"][0] == "train" and "1 epoch, AT resnet8, C=100" in rows["cifar100/at.yaml"][1]
    teacher = torch.load(next((tmp_path / "work").glob("teacher_resnet14_*.pth")), weights_only=True)
    assert not torch.equal(teacher["stem.1.running_var"], torch.ones(16))  # statistics of the generated images
    assert code == 1  # a failure is not accounted for
    # The CIFAR file trained on 100 classes of 32-px images, read at 32 px (mdistiller's CIFAR size).
    run = tmp_path / "work" / "runs" / "001_sskd"
    assert not run.exists()  # refused files never start a run
    saved = yaml.safe_load((tmp_path / "work" / "runs" / "003_vanilla_mv2" / "config.yaml").read_text())
    assert (saved["DATASET"]["TYPE"], saved["DATASET"]["IMAGE_SIZE"]) == ("cifar100", 32)
    assert (saved["SOLVER"]["BATCH_SIZE"], saved["SOLVER"]["EPOCHS"], saved["DATASET"]["TEST"]["BATCH_SIZE"]) == (
        16,
        1,
        16,
    )
    fine = yaml.safe_load((tmp_path / "work" / "runs" / "004_makd" / "config.yaml").read_text())
    assert fine["SOLVER"]["BATCH_SIZE"] == 4 and fine["DATASET"]["TYPE"] == "oxfordpets"  # below the cap: kept


def test_the_official_repository_files_are_all_accounted_for_when_its_mirror_is_here(tmp_path, capsys):
    if not MAKD_MIRROR.is_dir():
        pytest.skip(f"no mirror at {MAKD_MIRROR}")
    archive = subprocess.run(["git", "-C", str(MAKD_MIRROR), "archive", "HEAD", "configs"], capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    code = load_tool("check_official_configs").main([str(tmp_path / "configs"), "--load-only"])
    out = capsys.readouterr().out
    assert code == 0
    last = out.rstrip().splitlines()[-1]
    # every method of the official files is implemented: nothing is refused any more (issue 23)
    assert last == "54 YAML files: 54 load, 0 refuse (method not implemented), 0 fail"
    assert "fine_grained/makd.yaml" in out and "cifar100/crd.yaml" in out
