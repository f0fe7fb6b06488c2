"""remote_code_compat's "config_defaults" step on the real InternVLChatConfig: some transformers releases (5.17, on
the GPU machines) build `cls()` while loading a config, which InternVLChatConfig cannot do; the loader marks the
class and loads again, and a config that is broken for another reason still fails with its own error."""

from __future__ import annotations

import json

import pytest
from mirrors import absent_reason, mirror

from makd.demo.internvl_remote_code import RemoteCheckpointSpec, checkpoint_config, flatten_remote_code
from makd.mllm.remote_code_compat import allow_config_without_defaults, load_remote_config

GIT_DIR = mirror("OpenGVLab/InternVL")
pytestmark = pytest.mark.skipif(not GIT_DIR.is_dir(), reason=absent_reason("OpenGVLab/InternVL"))


def config_folder(tmp_path, name: str, architecture: str | None = None):
    folder = tmp_path / name
    flatten_remote_code(GIT_DIR, "HEAD", folder)
    config = checkpoint_config(RemoteCheckpointSpec(language_model="qwen2"), vocab_size=100)
    if architecture:
        config["llm_config"]["architectures"] = [architecture]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_real_config_class_cannot_be_built_without_arguments_and_is_marked(tmp_path):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder = config_folder(tmp_path, "marked")
    config_class = get_class_from_dynamic_module("configuration_internvl_chat.InternVLChatConfig", str(folder))
    with pytest.raises(ValueError, match="Unsupported architecture"):
        config_class()  # what transformers 5.17 calls while loading
    assert allow_config_without_defaults(config_class) is True
    assert config_class.has_no_defaults_at_init and allow_config_without_defaults(config_class) is False


def test_the_config_loads_with_its_own_class(tmp_path):
    config, applied = load_remote_config(str(config_folder(tmp_path, "loads")))
    assert type(config).__name__ == "InternVLChatConfig" and type(config.llm_config).__name__ == "Qwen2Config"
    assert config.template == "internvl2_5" and isinstance(applied, bool)
    assert not applied or type(config).has_no_defaults_at_init  # marked only where the first load failed


def test_a_config_broken_otherwise_keeps_its_error(tmp_path):
    with pytest.raises(ValueError, match="Unsupported architecture: MambaForCausalLM"):
        load_remote_config(str(config_folder(tmp_path, "broken", "MambaForCausalLM")))
