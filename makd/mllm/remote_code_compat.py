"""What remote-code InternVL checkpoints need to run exactly under the installed transformers, step by step.

The paper's teachers ship their own Python files (`trust_remote_code`), written against transformers 4.37-4.45.
None of those files is patched or copied here; each step below adapts one known difference at run time, is
applied only where the loaded code needs it, and is recorded (`InternVLParts.info["compat"]`, hence the sidecar):

- "post_init": transformers 5 finishes loading with state that `PreTrainedModel.post_init()` sets up
  (`all_tied_weights_keys`); InternVLChatModel.__init__ of every release before mid-2025 never calls it (upstream
  added the call in August 2025). The class is loaded through a subclass whose __init__ calls it when the
  original did not; nothing else changes (same name, module, weights and methods).
- "buffers": transformers 5 builds a model on the meta device and loads the checkpoint's tensors into it; the
  non-persistent buffers a module computes in its __init__ (the RoPE tables `inv_freq`, `cos_cached`,
  `sin_cached` of InternLM2's rotary embeddings) are then left as uninitialised memory, because only
  transformers' own classes re-initialise theirs. Run as it is, InternLM2 attends with garbage positions and
  gives plausible-looking, wrong P(yes). Each remote module holding such buffers is rebuilt by its own __init__
  on the CPU, with its constructor arguments read back from the attributes of the same name and the loading
  dtype as the default dtype (what transformers 4, which the code was written for, did at construction); a
  module whose arguments cannot be read back stops the load.
- "4d_mask": decoders written before transformers 4.36 (InternLM2's, in InternVL2/2.5-2B/8B/26B) build their
  attention mask from a 2D padding mask in `_prepare_decoder_attention_mask` and refuse the [B, 1, q, kv] mask of
  the packed question layout. The decoder instance gets a hook that passes a 4D mask through unchanged (as
  transformers' own mask helpers do since 4.36) and hands anything else to the original. It is installed only
  when packed scoring is chosen, after packed and expanded scoring agree on a test prompt.
- "config_defaults": some transformers 5 releases (5.17 among them; not 5.25) build a default instance of a config
  class while loading one (`from_dict` logs the config, and its repr diffs it against `cls()`). InternVLChatConfig()
  without arguments raises `ValueError: Unsupported architecture: ` (its default llm_config names no
  architecture), so the checkpoint could not even be configured. The class is given the flag transformers itself
  sets on config classes that need arguments (`has_no_defaults_at_init`); only the config's repr and saved diff
  change (they list every key).
- attention implementation: the command chooses it (`language_model_attention`) and writes it into the loaded
  config, instead of trusting the checkpoint's `llm_config.attn_implementation` (InternVL's training code writes
  flash_attention_2 there, which cannot load where flash-attn is absent).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

import torch

POST_INIT = "post_init"
BUFFERS = "buffers"
FOUR_D_MASK = "4d_mask"
CONFIG_DEFAULTS = "config_defaults"
ATTENTION_CHOICES = ("auto", "eager", "sdpa", "flash_attention_2")


def with_post_init(model_class: type) -> type:
    """`model_class` under the same name, calling `post_init()` at the end of __init__ when it did not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        model_class.__init__(self, *args, **kwargs)
        if not hasattr(self, "all_tied_weights_keys"):  # set by post_init in transformers 5
            self.post_init()
            self._makd_compat = POST_INIT

    return type(
        model_class.__name__,
        (model_class,),
        {"__init__": __init__, "__module__": model_class.__module__, "__qualname__": model_class.__qualname__},
    )


def applied_post_init(model: torch.nn.Module) -> bool:
    return getattr(model, "_makd_compat", None) == POST_INIT


def allow_config_without_defaults(config_class: type) -> bool:
    """Mark a remote config class that cannot be built without arguments as such (`has_no_defaults_at_init`),
    so that transformers does not build `config_class()` while loading it; returns whether it was needed."""
    if getattr(config_class, "has_no_defaults_at_init", False):
        return False
    try:
        config_class()
    except Exception:  # noqa: BLE001 - whatever the class raises, transformers would raise it too
        config_class.has_no_defaults_at_init = True
        return True
    return False


def load_remote_config(model_id: str, revision: str | None = None) -> tuple[Any, bool]:
    """(the checkpoint's config loaded with its own class, whether "config_defaults" was needed): loaded as it is
    first; only when that fails and the class cannot be built without arguments is it marked so and loaded again
    (a failure of another kind fails again, unchanged)."""
    from transformers import AutoConfig, PretrainedConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    try:
        return AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=True), False
    except ValueError:
        raw, _ = PretrainedConfig.get_config_dict(model_id, revision=revision)
        reference = (raw.get("auto_map") or {}).get("AutoConfig")
        if not reference or not allow_config_without_defaults(
            get_class_from_dynamic_module(reference, model_id, revision=revision)
        ):
            raise
    return AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=True), True


class UnrestorableBufferError(RuntimeError):
    """A remote module's non-persistent buffers cannot be recomputed (constructor arguments unknown)."""


def _is_remote(module: torch.nn.Module) -> bool:
    return type(module).__module__.startswith("transformers_modules")


def _constructor_arguments(module: torch.nn.Module) -> dict[str, Any]:
    """Keyword arguments for `type(module).__init__` read back from the module's attributes of the same names."""
    arguments: dict[str, Any] = {}
    for name, parameter in list(inspect.signature(type(module).__init__).parameters.items())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name == "device":
            arguments[name] = "cpu"
        elif name in module.__dict__ or hasattr(module, name):
            arguments[name] = getattr(module, name)
        elif parameter.default is inspect.Parameter.empty:
            raise UnrestorableBufferError(
                f"{type(module).__name__} holds non-persistent buffers that transformers does not restore, and its "
                f"constructor argument {name!r} cannot be read back"
            )
    return arguments


def restore_nonpersistent_buffers(model: torch.nn.Module, dtype: torch.dtype) -> list[str]:
    """Rebuild every remote-code module that owns non-persistent buffers with its own __init__ (on the CPU, under
    default dtype `dtype` as transformers 4 constructed it); returns the names of the modules rebuilt."""
    rebuilt = []
    for name, module in model.named_modules():
        owned = [b for b in module._non_persistent_buffers_set if module._buffers.get(b) is not None]
        if not owned or not _is_remote(module):
            continue  # transformers' own classes re-initialise their buffers after loading
        if any(True for _ in module.parameters(recurse=False)):
            raise UnrestorableBufferError(f"{name} ({type(module).__name__}) mixes weights with non-persistent buffers")
        device = module._buffers[owned[0]].device
        arguments = _constructor_arguments(module)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype if dtype.is_floating_point else previous)
        try:
            type(module).__init__(module, **arguments)
        finally:
            torch.set_default_dtype(previous)
        module.to(device)
        rebuilt.append(name)
    return rebuilt


def admit_4d_masks(decoder: torch.nn.Module) -> Callable[[], None] | None:
    """Let a 4D attention mask through the decoder's `_prepare_decoder_attention_mask`; returns the undo, or None
    when the decoder has no such hook (transformers' own classes take 4D masks as they are)."""
    original = getattr(decoder, "_prepare_decoder_attention_mask", None)
    if original is None:
        return None

    def prepare(attention_mask, input_shape, inputs_embeds, past_key_values_length):
        if attention_mask is not None and attention_mask.dim() == 4:
            return attention_mask  # already [B, 1, q, past + q], additive
        return original(attention_mask, input_shape, inputs_embeds, past_key_values_length)

    decoder._prepare_decoder_attention_mask = prepare  # on the instance: the class stays as shipped

    def undo() -> None:
        del decoder._prepare_decoder_attention_mask

    return undo


def flash_attention_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def native_class_supports_sdpa(architecture: str) -> bool:
    """Whether `architecture` (e.g. "Qwen2ForCausalLM") is a transformers class with an sdpa path; remote-code
    language models (InternLM2ForCausalLM) are not, and only know eager and flash_attention_2."""
    import transformers

    native = getattr(transformers, architecture, None)
    return bool(getattr(native, "_supports_sdpa", False))


def language_model_attention(requested: str, architecture: str, device: torch.device) -> str:
    """The attention implementation the language model runs with.

    auto: sdpa where the class has it, else eager. flash_attention_2 only when asked for, installed and on CUDA
    (and it cannot take the packed layout's mask: packed scoring then falls back to expanded).
    """
    if requested not in ATTENTION_CHOICES:
        raise ValueError(f"attention implementation {requested!r} is unknown (use {', '.join(ATTENTION_CHOICES)})")
    if requested == "flash_attention_2":
        if not flash_attention_installed():
            raise ValueError(
                "flash_attention_2 was asked for but the flash-attn package is not installed "
                "(pip install flash-attn, or use --attn-implementation auto)"
            )
        if device.type != "cuda":
            raise ValueError(f"flash_attention_2 runs on CUDA only, not on {device} (use --attn-implementation auto)")
        return requested
    if requested == "sdpa" and not native_class_supports_sdpa(architecture):
        raise ValueError(f"{architecture} has no sdpa attention (use --attn-implementation auto or eager)")
    if requested == "auto":
        return "sdpa" if native_class_supports_sdpa(architecture) else "eager"
    return requested


def set_language_model_attention(llm_config: Any, implementation: str) -> None:
    """Write the choice where both kinds of language model read it: transformers' classes read
    `_attn_implementation`, remote ones (InternLM2) a plain `attn_implementation` attribute."""
    llm_config.attn_implementation = implementation
    llm_config._attn_implementation = implementation
