"""The training settings that matter on a GPU, where they can be checked without one: SOLVER.AMP_DTYPE, mixed
precision off on the CPU. tests/test_cuda_training.py runs them."""

from __future__ import annotations

import pytest
import torch

from makd.config import ConfigError, load_cfg
from makd.engine.trainer import MixedPrecision, amp_dtype


def test_amp_dtype_key_is_checked(release_dataset):
    config = str(release_dataset["config"])
    assert load_cfg(config).SOLVER.AMP_DTYPE == "auto"
    assert load_cfg(config, ["SOLVER.AMP_DTYPE", "float16"]).SOLVER.AMP_DTYPE == "float16"
    with pytest.raises(ConfigError, match="SOLVER.AMP_DTYPE 'half' is unknown; use auto, bfloat16, float16"):
        load_cfg(config, ["SOLVER.AMP_DTYPE", "half"])


def test_mixed_precision_is_off_on_the_cpu_whatever_the_keys(release_dataset):
    cfg = load_cfg(str(release_dataset["config"]), ["SOLVER.AMP", "True", "SOLVER.AMP_DTYPE", "float16"])
    amp = MixedPrecision(cfg, torch.device("cpu"))
    assert amp.dtype is None and not amp.scaler.is_enabled()
    with amp.autocast():
        assert not torch.is_autocast_enabled("cuda") and not torch.is_autocast_enabled("cpu")
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.float32


def test_explicit_amp_dtypes():
    assert amp_dtype("bfloat16") == torch.bfloat16 and amp_dtype("float16") == torch.float16
