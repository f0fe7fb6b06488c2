"""The config tree: official keys load unchanged, every key is commented, bad values fail in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from makd.config import ConfigError, get_cfg, load_cfg

REPO = Path(__file__).resolve().parents[1]


def test_every_default_key_has_a_comment():
    source = (REPO / "makd/config/defaults.py").read_text().splitlines()
    assignments = [line for line in source if re.match(r"^_C(\.\w+)+ = ", line) and "CN()" not in line]
    assert len(assignments) > 50
    uncommented = [line for line in assignments if "#" not in line]
    # A key may carry its comment on the line(s) just above it instead.
    for line in uncommented:
        index = source.index(line)
        assert source[index - 1].lstrip().startswith("#") or line.split(" = ")[0] in {
            "_C.SOLVER.EPOCHS",
            "_C.SOLVER.LR",
            "_C.SOLVER.LR_DECAY_RATE",
            "_C.SOLVER.WEIGHT_DECAY",
        }, f"no comment for {line}"


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.SOLVER.LR = 123.0
    assert b.SOLVER.LR == 0.01


def test_official_style_yaml_loads_unchanged():
    cfg = load_cfg(str(REPO / "configs/fine_grained/makd.yaml"))
    assert cfg.DISTILLER.TYPE == "MaKD" and cfg.MaKD.ALPHA == 4.0 and cfg.SOLVER.LR_DECAY_STAGES == [150, 180, 210]
    assert cfg.EXPERIMENT.NAME == "makd_res18" and cfg.is_frozen()


@pytest.mark.parametrize(
    "path",
    # configs/studies/ holds study files (tools/study.py), checked by tests/test_study.py
    sorted(p for p in (REPO / "configs").rglob("*.yaml") if not p.name.startswith("_") and "studies" not in p.parts),
)
def test_every_shipped_config_loads(path):
    cfg = load_cfg(str(path))
    assert cfg.SOLVER.EPOCHS >= 1
    if "fine_grained" in path.parts and path.name != "makd.yaml":
        # The paper's protocol (configs/fine_grained/_protocol.yaml).
        assert (cfg.SOLVER.EPOCHS, cfg.SOLVER.BATCH_SIZE, cfg.SOLVER.LR) == (240, 16, 0.01)
        assert cfg.SOLVER.LR_DECAY_STAGES == [150, 180, 210] and cfg.DATASET.IMAGE_SIZE == 224
        assert cfg.MaKD.ASPECT_NUM == 50 and cfg.MaKD.ALPHA == 4.0


def test_command_line_overrides_and_types(tmp_path):
    cfg = load_cfg(None, ["SOLVER.LR", "0.5", "SOLVER.LR_DECAY_STAGES", "[3, 4]", "LOG.WANDB", "True", "SEED", "7"])
    assert cfg.SOLVER.LR == 0.5 and cfg.SOLVER.LR_DECAY_STAGES == [3, 4] and cfg.LOG.WANDB is True and cfg.SEED == 7
    # PyYAML reads 1e-3 (no dot) as a string; float keys still take it.
    path = tmp_path / "sci.yaml"
    path.write_text("SOLVER:\n  LR: 1e-3\n")
    assert load_cfg(str(path), ["SOLVER.WEIGHT_DECAY", "5e-4"]).SOLVER.WEIGHT_DECAY == 5e-4
    assert load_cfg(str(path)).SOLVER.LR == 0.001


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("SOLVER:\n  LRR: 0.1\n", "unknown config key SOLVER.LRR; did you mean SOLVER.LR?"),
        ("SOLVER:\n  EPOCHS: ten\n", "SOLVER.EPOCHS must be int"),
        ("MaKD:\n  ALPHA: [1]\n", "MaKD.ALPHA must be float"),
        ("DISTILLER:\n  TYPE: KDD\n", "DISTILLER.TYPE 'KDD' is unknown"),
        ("MaKD:\n  TARGETS: noise\n", "MaKD.TARGETS 'noise' is unknown"),
        ("SOLVER: 3\n", "SOLVER is a group of keys"),
        ("[1, 2]\n", "expected a mapping"),
    ],
)
def test_bad_values_fail_in_one_line(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_cfg(str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_same_train_and_test_folder_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="TRAIN_IMAGE_PATH and DATASET.TEST_IMAGE_PATH are the same folder"):
        load_cfg(None, ["DATASET.TRAIN_IMAGE_PATH", str(tmp_path), "DATASET.TEST_IMAGE_PATH", str(tmp_path) + "/"])


def test_base_inheritance_and_name_from_file(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  LR: 0.2\n  EPOCHS: 9\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  EPOCHS: 3\n")
    cfg = load_cfg(str(tmp_path / "child.yaml"))
    assert (cfg.SOLVER.LR, cfg.SOLVER.EPOCHS, cfg.EXPERIMENT.NAME) == (0.2, 3, "child")


def test_odd_overrides_and_missing_file():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_cfg(None, ["SOLVER.LR"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_cfg("/nonexistent/config.yaml")


def test_cifar100_defaults_fill_only_the_keys_a_config_leaves_unset(tmp_path):
    # mdistiller's CIFAR files name no image size, crop or normalisation: they must not train at 224 px with rrc
    cfg = load_cfg(None, ["DATASET.TYPE", "cifar100"])
    assert (cfg.DATASET.IMAGE_SIZE, cfg.DATASET.RESIZE_RATIO, cfg.DATASET.AUGMENT.CROP) == (32, 1.0, "crop_pad")
    assert cfg.DATASET.AUGMENT.PAD == 4 and cfg.DATASET.MEAN == [0.5071, 0.4865, 0.4409]
    given = tmp_path / "mine.yaml"
    given.write_text("DATASET:\n  TYPE: cifar100\n  IMAGE_SIZE: 40\n  AUGMENT: {CROP: rrc}\n")
    cfg = load_cfg(str(given))
    assert (cfg.DATASET.IMAGE_SIZE, cfg.DATASET.AUGMENT.CROP, cfg.DATASET.RESIZE_RATIO) == (40, "rrc", 1.0)
    assert load_cfg(None, ["DATASET.TYPE", "cifar100", "DATASET.IMAGE_SIZE", "64"]).DATASET.IMAGE_SIZE == 64
    plain = load_cfg(None)  # other datasets keep the official fine-grained defaults
    assert (plain.DATASET.IMAGE_SIZE, plain.DATASET.AUGMENT.CROP) == (224, "rrc")
