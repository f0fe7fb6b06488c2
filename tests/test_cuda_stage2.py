"""CUDA variants of stage 2's device-dependent paths; skipped without a CUDA device. `tools/gpu_check.py` runs them
(`pytest -m cuda`) and reports the figures they record (`record_property`: max |dP| and the attention chosen).

Covered: the packed prefix attention's CUDA log-sum-exp kernels (flash for bfloat16, memory-efficient for float32)
against one masked attention in float64; the scorer on CUDA choosing the split and equal to expanded mode and to
the CPU; bfloat16 against float32 for the hf backend and for the remote backend on the real remote code of
OpenGVLab/InternVL (Qwen2 and InternLM2 language models), assembled as the real-teacher tests do.

The remote-code files come from MAKD_INTERNVL_CODE (a folder written by
makd.demo.internvl_remote_code.flatten_remote_code, which `tools/gpu_check.py --internvl-code DIR` sets), else from
the repository mirror (tests/mirrors.py); without either, those cases skip and say so.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mirrors import absent_reason, mirror
from mllm_fixtures import QUESTIONS, random_image, tiny_hf_model  # noqa: F401
from test_mllm_prefix_attention import masked_reference

from makd.mllm.inprocess_scorer import InternVLScorer
from makd.mllm.model_loading import load_internvl
from makd.mllm.prefix_attention import PrefixSplit, _attention_with_lse, prefix_split_attention

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

CUDA = torch.device("cuda")
EXACT = 1e-4  # float32 on two devices: sums in other orders
BF16 = 0.05  # bfloat16 keeps ~3 significant digits per activation (the CPU tests' bound)


@pytest.fixture
def no_tf32():
    """float32 on CUDA as float32: cuDNN's convolutions (the patch embedding) would otherwise run in TF32."""
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(4, 2, 64), (8, 8, 128), (6, 2, 16)])
def test_split_attention_on_cuda_equals_one_masked_attention(dtype, heads, kv_heads, dim, record_property):
    generator = torch.Generator().manual_seed(heads * dim)
    lengths, prefix, batch = [5, 1, 19, 7], 301, 2
    total = sum(lengths)
    query = torch.randn(batch, heads, total, dim, generator=generator)
    key = torch.randn(batch, kv_heads, prefix + total, dim, generator=generator)
    value = torch.randn(batch, kv_heads, prefix + total, dim, generator=generator)
    split = PrefixSplit.for_suffixes(lengths, prefix, CUDA)
    got = prefix_split_attention(query.to(CUDA, dtype), key.to(CUDA, dtype), value.to(CUDA, dtype), split, 0.125)
    expected = masked_reference(query, key, value, prefix, lengths, 0.125)
    difference = float((got.double().cpu() - expected).abs().max())
    record_property("max_abs_difference", difference)
    assert got.dtype == dtype and difference <= (1e-4 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernels_return_the_log_sum_exp_of_the_scores(dtype):
    generator = torch.Generator().manual_seed(1)
    query, key, value = (torch.randn(2, 3, n, 64, generator=generator) for n in (45, 77, 77))
    for causal in (False, True):
        q, k = (query, key) if not causal else (query, key[:, :, :45])
        v = value if not causal else value[:, :, :45]
        out, lse = _attention_with_lse(q.to(CUDA, dtype), k.to(CUDA, dtype), v.to(CUDA, dtype), causal, 0.2)
        scores = (q.double() @ k.double().transpose(-1, -2)) * 0.2
        if causal:
            scores = scores.masked_fill(torch.ones(45, 45, dtype=torch.bool).triu(1), float("-inf"))
        tolerance = 1e-4 if dtype == torch.float32 else 3e-2
        assert lse.shape == (2, 3, 45) and lse.dtype == torch.float32
        assert float((lse.double().cpu() - torch.logsumexp(scores, -1)).abs().max()) <= tolerance
        expected = torch.softmax(scores, -1) @ v.double()
        assert float((out.double().cpu() - expected).abs().max()) <= tolerance


@pytest.fixture(scope="module")
def hf_on_cuda(tiny_hf_model):  # noqa: F811
    cache = {}

    def load(dtype: str, device: str = "cuda"):
        if (dtype, device) not in cache:
            cache[dtype, device] = load_internvl(str(tiny_hf_model), device=device, dtype=dtype)
        return cache[dtype, device]

    return load


def scores(parts, image, mode: str, max_tiles: int = 12) -> tuple[np.ndarray, InternVLScorer]:
    scorer = InternVLScorer(parts, max_tiles=max_tiles, batch_size=3, prefix_mode=mode)
    return scorer.score([image], QUESTIONS)[0], scorer


def test_hf_backend_on_cuda_splits_and_equals_expanded_and_the_cpu(hf_on_cuda, no_tf32, record_property):
    image = random_image(500, 375, seed=5)  # 13 tiles
    packed, scorer = scores(hf_on_cuda("float32"), image, "packed")
    expanded, _ = scores(hf_on_cuda("float32"), image, "expanded")
    cpu, _ = scores(hf_on_cuda("float32", "cpu"), image, "packed")
    record_property("packed_attention", scorer.packed_attention)
    record_property("max_dP_packed_vs_expanded_fp32", float(np.abs(packed - expanded).max()))
    record_property("max_dP_cuda_vs_cpu_fp32", float(np.abs(packed - cpu).max()))
    assert scorer.packed_attention == "split"  # the CUDA log-sum-exp kernel passed the start-up check
    assert np.abs(packed - expanded).max() <= EXACT and np.abs(packed - cpu).max() <= EXACT
    assert np.std(cpu) > 0.02  # the random model's answers spread out, so the comparison means something


def test_hf_backend_bfloat16_on_cuda_stays_near_float32(hf_on_cuda, no_tf32, record_property):
    for tiles, image in ((1, random_image(448, 448, seed=7)), (12, random_image(500, 375, seed=5))):
        exact, _ = scores(hf_on_cuda("float32"), image, "packed", tiles)
        packed, scorer = scores(hf_on_cuda("bfloat16"), image, "packed", tiles)
        expanded, _ = scores(hf_on_cuda("bfloat16"), image, "expanded", tiles)
        record_property(f"max_dP_bf16_vs_fp32_{tiles}", float(np.abs(packed - exact).max()))
        record_property(f"max_dP_bf16_packed_vs_expanded_{tiles}", float(np.abs(packed - expanded).max()))
        assert scorer.packed_attention == "split"
        assert np.abs(packed - exact).max() <= BF16 and np.abs(expanded - exact).max() <= BF16


def internvl_code(tmp_path_factory) -> Path:
    """Flattened remote-code files of OpenGVLab/InternVL (HEAD): MAKD_INTERNVL_CODE, else from the mirror."""
    from makd.demo.internvl_remote_code import REMOTE_CODE_FILES, flatten_remote_code

    given = os.environ.get("MAKD_INTERNVL_CODE")
    if given:
        missing = [name for name in REMOTE_CODE_FILES if not (Path(given) / name).is_file()]
        if missing:
            pytest.fail(f"MAKD_INTERNVL_CODE={given} lacks {', '.join(missing)} (flatten_remote_code writes them)")
        return Path(given)
    git_dir = mirror("OpenGVLab/InternVL")
    if not git_dir.is_dir():
        pytest.skip(f"{absent_reason('OpenGVLab/InternVL')}, and MAKD_INTERNVL_CODE is not set")
    code = tmp_path_factory.mktemp("internvl_code")
    flatten_remote_code(git_dir, "HEAD", code)
    return code


@pytest.fixture(scope="module")
def remote_checkpoints(tmp_path_factory):
    from makd.demo.internvl_remote_code import FAMILIES, RemoteCheckpointSpec, assemble_checkpoint

    code = internvl_code(tmp_path_factory)
    built = {}

    def build(name: str) -> Path:
        if name not in built:
            _, language_model, template = FAMILIES[name]
            spec = RemoteCheckpointSpec(language_model=language_model, template=template)
            built[name] = assemble_checkpoint(code, tmp_path_factory.mktemp(name), spec)
        return built[name]

    return build


@pytest.mark.parametrize("name", ["internvl2_5-8b", "internvl2_5-1b"])  # InternLM2 and Qwen2 language models
def test_remote_backend_on_real_code_on_cuda(name, remote_checkpoints, no_tf32, record_property):
    folder = str(remote_checkpoints(name))
    cpu = load_internvl(folder, device="cpu", dtype="float32")  # exact against the real chat (CPU test suite)
    fp32, bf16 = (load_internvl(folder, device="cuda", dtype=dtype) for dtype in ("float32", "bfloat16"))
    image = random_image(500, 375, seed=5)
    reference, _ = scores(cpu, image, "packed")
    assert np.std(reference) > 0.02
    for mode in ("packed", "expanded"):
        exact, scorer = scores(fp32, image, mode)
        rounded, _ = scores(bf16, image, mode)
        assert scorer.prefix_mode == mode  # packed did not fall back to expanded
        record_property(f"max_dP_cuda_fp32_vs_cpu_{mode}", float(np.abs(exact - reference).max()))
        record_property(f"max_dP_bf16_vs_fp32_{mode}", float(np.abs(rounded - exact).max()))
        if mode == "packed":
            record_property("packed_attention", scorer.packed_attention)
        assert np.abs(exact - reference).max() <= EXACT and np.abs(rounded - exact).max() <= BF16
    record_property("compat", ",".join(fp32.info["compat"]))
