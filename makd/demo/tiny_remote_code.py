"""TESTING STAND-IN for the remote-code InternVL model (`InternVLChatModel`, trust_remote_code=True).

Tests and the benchmark save this file next to a tiny random checkpoint (as `modeling_internvl_chat.py`, named in
config.json's auto_map) and load it through the command's real loading path. It runs where no mirror of the
OpenGVLab/InternVL repository exists (CI); where one does, the tests also run the real files
(makd.demo.internvl_remote_code) and hold this stand-in to them. What it reproduces of the real code:
- the attributes `chat` and the scorer use: `extract_feature`, `num_image_token`, `template`, `system_message`
  (config.system_message, else the template's), `img_context_token_id` (None until set), `language_model`,
  and `get_conv_template` in the module's namespace (the real code imports it from the conversation.py it ships;
  here a minimal "internvl2_5" template with the same interface: system_message, roles, append_message,
  get_prompt);
- `__init__(config, vision_model=None, language_model=None, use_flash_attn=True)`;
- with `llm_config.legacy_cache` (the InternLM2 case: InternVL2/2.5-2B/8B/26B), a language model with the decoder
  interface of remote code written before transformers 4.36: legacy tuple KV caches under `past_key_values`,
  never modified by a forward, and a mask built from a 2D padding mask by `_prepare_decoder_attention_mask`,
  which refuses a 4D mask as InternLM2's does.
It is assembled from real transformers modules (InternVLVisionModel, Qwen2ForCausalLM). Not for real use.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn
from transformers import (
    DynamicCache,
    InternVLVisionConfig,
    InternVLVisionModel,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Model,
)
from transformers.modeling_outputs import BaseModelOutputWithPast

# The default system message of the internvl2_5 conversation template of the remote code.
INTERNVL2_5_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)


class Conversation:
    """An MPT-style conversation: system block, then role + message + separator per turn, the last role left open."""

    def __init__(self, name: str, system_message: str, roles: tuple[str, str], sep: str) -> None:
        self.name, self.system_message, self.roles, self.sep = name, system_message, roles, sep
        self.messages: list[list[str | None]] = []

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        prompt = f"<|im_start|>system\n{self.system_message}{self.sep}"
        for role, message in self.messages:
            prompt += role + (message + self.sep if message else "")
        return prompt


_TEMPLATES = {
    "internvl2_5": Conversation(
        "internvl2_5", INTERNVL2_5_SYSTEM_MESSAGE, ("<|im_start|>user\n", "<|im_start|>assistant\n"), "<|im_end|>\n"
    )
}


def get_conv_template(name: str) -> Conversation:
    return copy.deepcopy(_TEMPLATES[name])


class InternVLChatConfig(PretrainedConfig):
    model_type = "internvl_chat"
    sub_configs = {"vision_config": InternVLVisionConfig, "llm_config": Qwen2Config}

    def __init__(
        self,
        vision_config: dict | None = None,
        llm_config: dict | None = None,
        downsample_ratio: float = 0.5,
        template: str = "internvl2_5",
        select_layer: int = -1,
        **kwargs,
    ) -> None:
        self.vision_config = InternVLVisionConfig(**(vision_config or {}))
        self.llm_config = Qwen2Config(**(llm_config or {}))
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.select_layer = select_layer
        super().__init__(**kwargs)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["vision_config"] = self.vision_config.to_dict()
        out["llm_config"] = self.llm_config.to_dict()
        return out


class LegacyCacheQwen2Model(Qwen2Model):
    """Qwen2's layers behind the decoder interface of InternLM2's remote code (see the module docstring)."""

    def _prepare_decoder_attention_mask(self, attention_mask, input_shape, inputs_embeds, past_key_values_length):
        """[B, past + L] padding mask -> additive [B, 1, L, past + L] causal mask, as InternLM2 builds it."""
        batch, src_length = attention_mask.size()  # a 4D mask fails to unpack here, as in InternLM2's _expand_mask
        length, dtype, device = input_shape[-1], inputs_embeds.dtype, inputs_embeds.device
        lowest = torch.finfo(dtype).min
        causal = torch.full((length, length), lowest, device=device).triu(1)
        causal = torch.cat([torch.zeros(length, past_key_values_length, device=device), causal], dim=-1)
        padding = torch.zeros(batch, 1, 1, src_length, dtype=dtype, device=device)
        padding = padding.masked_fill(attention_mask[:, None, None, :] == 0, lowest)
        return causal.to(dtype)[None, None] + padding

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, **kwargs):  # fmt: skip
        embeds = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
        batch, length = embeds.shape[:2]
        past = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if attention_mask is None:
            attention_mask = torch.ones(batch, past + length, dtype=torch.bool, device=embeds.device)
        mask = self._prepare_decoder_attention_mask(attention_mask, (batch, length), embeds, past)
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=embeds.device)[None].expand(batch, -1)
        cache = DynamicCache()
        for layer, (keys, values) in enumerate(past_key_values or ()):
            cache.update(keys, values, layer)  # a new cache over the caller's tensors: the tuple stays as it was
        keyword = "cache" if "cache" in inspect.signature(Qwen2Model.forward).parameters else "past_key_values"
        out = super().forward(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                              use_cache=True, **{keyword: cache})  # fmt: skip
        legacy = tuple((layer.keys, layer.values) for layer in cache.layers) if use_cache else None
        return BaseModelOutputWithPast(last_hidden_state=out.last_hidden_state, past_key_values=legacy)


class LegacyCacheQwen2ForCausalLM(Qwen2ForCausalLM):
    def __init__(self, config: Qwen2Config) -> None:
        super().__init__(config)
        self.model = LegacyCacheQwen2Model(config)
        self.post_init()


class InternVLChatModel(PreTrainedModel):
    config_class = InternVLChatConfig
    main_input_name = "pixel_values"
    _no_split_modules = ["Qwen2DecoderLayer"]

    def __init__(self, config: InternVLChatConfig, vision_model=None, language_model=None, use_flash_attn=True):
        super().__init__(config)
        vision = config.vision_config
        self.template = config.template
        conversation = get_conv_template(self.template)
        self.system_message = getattr(config, "system_message", conversation.system_message)
        self.downsample_ratio = config.downsample_ratio
        self.num_image_token = int(
            (vision.image_size[0] // vision.patch_size[0]) ** 2 * config.downsample_ratio**2
        )
        self.img_context_token_id = None
        self.vision_model = vision_model or InternVLVisionModel(vision)
        legacy = getattr(config.llm_config, "legacy_cache", False)
        lm_class = LegacyCacheQwen2ForCausalLM if legacy else Qwen2ForCausalLM
        self.language_model = language_model or lm_class(config.llm_config)
        width = vision.hidden_size * int(1 / config.downsample_ratio) ** 2
        hidden = config.llm_config.hidden_size
        self.mlp1 = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.post_init()

    def pixel_shuffle(self, x: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
        # [n, w, h, c] -> [n, h*s, w*s, c/s^2], the "v2" shuffle of InternVL2.5
        n, w, h, c = x.size()
        x = x.view(n, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3).contiguous()
        x = x.view(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
        return x.permute(0, 2, 1, 3).contiguous()

    def extract_feature(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[n_tiles, 3, S, S] -> [n_tiles, num_image_token, llm hidden]."""
        out = self.vision_model(pixel_values=pixel_values.to(self.dtype))
        tokens = out.last_hidden_state[:, 1:, :]  # drop the class token
        side = int(tokens.shape[1] ** 0.5)
        grid = tokens.reshape(tokens.shape[0], side, side, -1)
        grid = self.pixel_shuffle(grid, self.downsample_ratio)
        return self.mlp1(grid.reshape(grid.shape[0], -1, grid.shape[-1]))
