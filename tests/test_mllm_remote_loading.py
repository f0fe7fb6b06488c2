"""Loading remote-code checkpoints: what older code needs is done (and recorded), what cannot work is one line.

Built on the remote-code stand-in (tiny_remote_code), so these run everywhere; test_mllm_real_remote_code runs the
same cases on the real InternVL files where a mirror of the repository exists.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from mllm_fixtures import questions_file, random_image, tiny_remote_model  # noqa: F401

from makd.commands.stage2 import main
from makd.mllm.inprocess_scorer import InternVLScorer
from makd.mllm.model_loading import ModelLoadError, load_internvl


def edited_copy(source: Path, target: Path, old: str, new: str) -> Path:
    """A copy of a checkpoint folder whose modeling file has `old` replaced by `new` (exactly once)."""
    shutil.copytree(source, target)
    modeling = target / "modeling_internvl_chat.py"
    text = modeling.read_text(encoding="utf-8")
    assert text.count(old) == 1
    modeling.write_text(text.replace(old, new), encoding="utf-8")
    return target


def test_code_that_never_calls_post_init_loads_with_the_step_recorded(tiny_remote_model, tmp_path):  # noqa: F811
    call = "        self.post_init()\n\n    def pixel"
    folder = edited_copy(tiny_remote_model, tmp_path / "old", call, "\n    def pixel")
    parts = load_internvl(str(folder), device="cpu", dtype="float32")
    assert parts.info["compat"] == ["post_init"]
    assert type(parts.model).__name__ == "InternVLChatModel"
    reference = load_internvl(str(tiny_remote_model), device="cpu", dtype="float32")
    assert reference.info["compat"] == []  # the step only where the code needs it
    assert InternVLScorer(parts, max_tiles=1).prompt("Q?", 1) == InternVLScorer(reference, max_tiles=1).prompt("Q?", 1)


def test_a_package_the_remote_code_imports_is_named_with_its_pip_command(tiny_remote_model, tmp_path):  # noqa: F811
    needs = "import copy\nimport makd_absent_pkg\n"
    folder = edited_copy(tiny_remote_model, tmp_path / "needs", "import copy\n", needs)
    with pytest.raises(ModelLoadError) as caught:
        load_internvl(str(folder), device="cpu", dtype="float32")
    message = str(caught.value)
    assert "needs the Python package makd_absent_pkg" in message and "pip install makd_absent_pkg" in message
    assert "\n" not in message


def test_an_installed_package_hidden_from_python_is_reported_the_same_way(tiny_remote_model, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "einops", None)  # import einops now fails, as where it is not installed
    folder = tiny_remote_model.parent / "with_einops"
    if not folder.exists():
        edited_copy(tiny_remote_model, folder, "import copy\n", "import copy\n\nimport einops  # noqa: F401\n")
    expected = r"needs the Python package einops, not installed here \(pip install einops\)"
    with pytest.raises(ModelLoadError, match=expected):
        load_internvl(str(folder), device="cpu", dtype="float32")


def test_remote_code_that_fails_is_one_line_naming_where(tiny_remote_model, tmp_path):  # noqa: F811
    folder = edited_copy(
        tiny_remote_model, tmp_path / "broken", "        self.img_context_token_id = None\n",
        "        self.img_context_token_id = None\n        raise AttributeError('no attribute from_legacy_cache')\n",
    )  # fmt: skip
    with pytest.raises(ModelLoadError) as caught:
        load_internvl(str(folder), device="cpu", dtype="float32")
    message = str(caught.value)
    assert "its remote code failed while loading (AttributeError: no attribute from_legacy_cache at " in message
    assert "modeling_internvl_chat.py:" in message and "--backend openai" in message


def test_the_checkpoints_attention_key_is_not_trusted(tiny_remote_model, tmp_path):  # noqa: F811
    folder = tmp_path / "flash"
    shutil.copytree(tiny_remote_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["llm_config"]["attn_implementation"] = "flash_attention_2"  # as InternVL's training code writes it
    (folder / "config.json").write_text(json.dumps(config))
    parts = load_internvl(str(folder), device="cpu", dtype="float32")  # flash-attn is not installed here
    assert parts.info["attn_implementation"] == "sdpa"
    with pytest.raises(ModelLoadError, match="flash_attention_2 was asked for but the flash-attn package is not"):
        load_internvl(str(folder), device="cpu", dtype="float32", attn_implementation="flash_attention_2")


def test_command_line_flash_attention_request_is_one_line(tiny_remote_model, questions_file, tmp_path, capsys):  # noqa: F811
    images = tmp_path / "images"
    images.mkdir()
    random_image(64, 48, 0).save(images / "a.png")
    code = main(["--model", str(tiny_remote_model), "--questions", str(questions_file), "--images", str(images),
                 "--output", str(tmp_path / "out.json"), "--attn-implementation", "flash_attention_2"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: --attn-implementation: flash_attention_2 was asked for")
    assert not (tmp_path / "out.json").exists()
