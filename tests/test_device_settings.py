"""The training settings that matter on a GPU, where they can be checked without one: SOLVER.AMP_DTYPE, the
determinism settings of DETERMINISTIC, mixed precision off on the CPU. tests/test_cuda_training.py runs them."""

from __future__ import annotations

import pytest
import torch

from makd.config import ConfigError, load_cfg
from makd.engine.reproducibility import use_deterministic_algorithms
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


@pytest.fixture
def restored_determinism():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.benchmark = before[1]


def test_determinism_on_cuda_sets_the_cublas_workspace_unless_the_user_did(monkeypatch, restored_determinism):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.benchmark = True
    use_deterministic_algorithms(torch.device("cuda"))  # sets process state only; no GPU is touched
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's smaller workspace is kept
    use_deterministic_algorithms(torch.device("cuda"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_determinism_on_the_cpu_leaves_the_environment(monkeypatch, restored_determinism):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    use_deterministic_algorithms(torch.device("cpu"))
    import os

    assert torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
