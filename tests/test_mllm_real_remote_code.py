"""Stage 2 on the real InternVL remote code: tiny checkpoints assembled from the files of the OpenGVLab/InternVL
repository (only their imports edited, makd.demo.internvl_remote_code.IMPORT_EDITS), loaded by the command's
loader and scored by the command's scorer, against the real code's own `chat` prompt and forward.

The reference model is built as transformers 4 (the version the code was written for) built it, so every buffer
comes from its own __init__ (`reference_model`), and answers through the real `chat` and forward (`chat_p_yes`).
Skipped without a mirror.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from mirrors import absent_reason, mirror
from mllm_fixtures import QUESTIONS, random_image, tiny_remote_legacy_model  # noqa: F401

from makd.demo.internvl_remote_code import (
    FAMILIES,
    IMPORT_EDITS,
    RemoteCheckpointSpec,
    assemble_checkpoint,
    compare_with_reference,
    flatten_remote_code,
    reference_model,
)
from makd.mllm.inprocess_scorer import InternVLScorer
from makd.mllm.model_loading import ModelLoadError, load_internvl

REPOSITORY = "OpenGVLab/InternVL"
GIT_DIR = mirror(REPOSITORY)
pytestmark = pytest.mark.skipif(not GIT_DIR.is_dir(), reason=absent_reason(REPOSITORY))

EXACT = 1e-5  # float32: the packed and expanded layouts only reorder sums
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    built = {}

    def build(name: str):
        if name not in built:
            commit, language_model, template = FAMILIES[name]
            code = tmp_path_factory.mktemp(f"code_{commit}")
            flatten_remote_code(GIT_DIR, commit, code)
            spec = RemoteCheckpointSpec(language_model=language_model, template=template)
            built[name] = assemble_checkpoint(code, tmp_path_factory.mktemp(name), spec)
        return built[name]

    return build


@pytest.fixture(scope="module")
def references(checkpoints):
    cache = {}

    def build(name: str):
        if name not in cache:
            cache[name] = reference_model(checkpoints(name))
        return cache[name]

    return build


@pytest.fixture(scope="module")
def loaded(checkpoints):
    cache = {}

    def load(name: str, dtype: str = "float32"):
        if (name, dtype) not in cache:
            cache[(name, dtype)] = load_internvl(str(checkpoints(name)), device="cpu", dtype=dtype)
        return cache[(name, dtype)]

    return load


def compare_with_real_code(parts, reference, image, max_tiles: int, mode: str) -> tuple[float, np.ndarray]:
    """max |dP| of the command's scorer against the real chat forward; asserts the prompts are equal."""
    result = compare_with_reference(parts, reference, image, QUESTIONS, max_tiles, mode)
    assert result.prefix_mode == mode  # packed did not fall back to expanded
    assert result.prompts_equal  # the prompt model.chat tokenized, id for id
    assert np.std(result.reference) > 0.02  # the random model's answers spread out, so the comparison means something
    return result.max_abs_difference, np.array(result.scores)


@pytest.mark.parametrize("mode", ["packed", "expanded"])
@pytest.mark.parametrize("name", ["internvl2_5-8b", "internvl2_5-1b", "internvl2_5-8b-release"])
def test_command_equals_the_real_chat_forward_at_1_and_12_tiles(name, mode, loaded, references):
    parts, reference = loaded(name), references(name)
    image = random_image(500, 375, seed=5)
    many, many_scores = compare_with_real_code(parts, reference, image, 12, mode)
    one, one_scores = compare_with_real_code(parts, reference, image, 1, mode)
    assert many <= EXACT and one <= EXACT
    assert np.abs(many_scores - one_scores).max() > 1e-3  # the 13 tiles reach the answers


@pytest.mark.parametrize("name", ["internvl2-8b", "internvl2-1b", "phi3-chat"])
def test_internvl2_templates_come_from_the_checkpoints_conversation_code(name, loaded, references):
    parts = loaded(name)
    template = FAMILIES[name][2]
    assert parts.chat_format.template == template and parts.chat_format.source == "checkpoint conversation.py"
    assert parts.chat_format.system_message == parts.model.system_message  # the template's own default
    for mode in ("packed", "expanded"):
        difference, _ = compare_with_real_code(parts, references(name), random_image(300, 900, seed=6), 12, mode)
        assert difference <= EXACT


def test_the_language_families_load_as_they_should(loaded):
    internlm2, qwen2, release = loaded("internvl2_5-8b"), loaded("internvl2_5-1b"), loaded("internvl2_5-8b-release")
    assert type(internlm2.decoder).__name__ == "InternLM2Model" and type(qwen2.decoder).__name__ == "Qwen2Model"
    assert type(internlm2.tokenizer).__name__ == "InternLM2Tokenizer"  # SentencePiece, as use_fast=False loads it
    assert internlm2.tokenizer("x")["input_ids"][0] == internlm2.tokenizer.bos_token_id  # InternLM2 prepends <s>
    assert internlm2.info["attn_implementation"] == "eager" and qwen2.info["attn_implementation"] == "sdpa"
    assert "post_init" in release.info["compat"] and "post_init" not in internlm2.info["compat"]
    InternVLScorer(internlm2, max_tiles=1)  # packed scoring chosen: InternLM2's 2D-mask hook lets 4D masks through
    assert "4d_mask" in internlm2.info["compat"]
    for parts in (internlm2, qwen2):  # Yes / No are single tokens after the assistant turn opens
        scorer = InternVLScorer(parts, max_tiles=1)
        assert parts.tokenizer.decode([scorer.tokens.yes_id]).strip() == "Yes"
        assert parts.tokenizer.decode([scorer.tokens.no_id]).strip() == "No"


@pytest.mark.parametrize("name", ["internvl2_5-8b", "internvl2_5-1b"])
def test_bfloat16_scores_stay_near_the_float32_real_forward(name, loaded):
    fp32, bf16 = loaded(name), loaded(name, "bfloat16")
    image = random_image(500, 375, seed=5)
    exact = InternVLScorer(fp32, max_tiles=1, batch_size=3).score([image], QUESTIONS)[0]
    rounded = InternVLScorer(bf16, max_tiles=1, batch_size=3).score([image], QUESTIONS)[0]
    assert np.abs(rounded - exact).max() <= 0.05  # bf16 keeps ~3 significant digits per activation


def test_import_edits_are_the_only_changes(tmp_path):
    from makd.demo.internvl_remote_code import REMOTE_CODE_FILES, read_repository_file

    flatten_remote_code(GIT_DIR, "HEAD", tmp_path)
    for name, path in REMOTE_CODE_FILES.items():
        original = read_repository_file(GIT_DIR, "HEAD", path).split("\n")
        flat = (tmp_path / name).read_text(encoding="utf-8").split("\n")
        edits = [e for e in IMPORT_EDITS if e.file == name]
        removed = [line for line in original if line not in flat]
        added = [line for line in flat if line not in original]
        assert sorted(removed) == sorted(e.old for e in edits)
        assert sorted(added) == sorted(e.new for e in edits if e.new is not None)
        assert len(flat) == len(original) - sum(e.new is None for e in edits)


def _decoder_interface(parts) -> tuple[type, bool, type | None, bool]:
    """(cache type, given cache left as it was, error of a 4D mask without the compat hook, 4D mask after it)."""
    from makd.mllm.remote_code_compat import admit_4d_masks

    decoder, ids = parts.decoder, torch.tensor([[1, 2, 3, 4]])
    cache = decoder(inputs_embeds=parts.embed_tokens(ids), use_cache=True).past_key_values
    kept = [t.clone() for layer in cache for t in layer]
    decoder(inputs_embeds=parts.embed_tokens(ids[:, :2]), past_key_values=cache, use_cache=True)
    unchanged = all(torch.equal(a, b) for a, b in zip(kept, [t for layer in cache for t in layer]))
    mask = torch.zeros(1, 1, 4, 4)
    try:
        decoder(inputs_embeds=parts.embed_tokens(ids), attention_mask=mask)
        refused = None
    except Exception as err:  # noqa: BLE001 - the kind of failure is what is compared
        refused = type(err)
    admit_4d_masks(decoder)
    decoder(inputs_embeds=parts.embed_tokens(ids), attention_mask=mask)
    return type(cache), unchanged, refused, True


def test_the_stand_in_reproduces_internlm2s_decoder_interface(checkpoints, tiny_remote_legacy_model):  # noqa: F811
    real = load_internvl(str(checkpoints("internvl2_5-8b")), device="cpu", dtype="float32")
    stand_in = load_internvl(str(tiny_remote_legacy_model), device="cpu", dtype="float32")
    assert _decoder_interface(real) == _decoder_interface(stand_in) == (tuple, True, ValueError, True)


def test_real_code_needing_einops_where_it_is_missing_is_one_line(checkpoints, monkeypatch, tmp_path):
    folder = tmp_path / "internvl2_5-8b-copy"  # a folder whose code this process has not imported yet
    shutil.copytree(checkpoints("internvl2_5-8b"), folder)
    monkeypatch.setitem(sys.modules, "einops", None)  # import einops fails, as where it is not installed
    with pytest.raises(ModelLoadError) as caught:
        load_internvl(str(folder), device="cpu", dtype="float32")
    assert str(caught.value) == (
        f"--model {folder}: its remote code needs the Python package einops, not installed here (pip install einops)"
    )


def test_a_flash_attention_key_in_the_real_config_does_not_stop_the_load(checkpoints, tmp_path):
    folder = tmp_path / "flash"
    shutil.copytree(checkpoints("internvl2_5-1b"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["llm_config"]["attn_implementation"] = "flash_attention_2"  # what InternVL's training code writes
    (folder / "config.json").write_text(json.dumps(config))
    parts = load_internvl(str(folder), device="cpu", dtype="float32")  # transformers alone refuses it here
    assert parts.info["attn_implementation"] == "sdpa"
