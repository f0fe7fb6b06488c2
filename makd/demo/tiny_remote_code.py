"""TESTING STAND-IN for the remote-code InternVL2.5 model (`InternVLChatModel`, trust_remote_code=True).

The real remote code cannot be fetched here, so tests and the benchmark save this file next to a tiny random
checkpoint (as `modeling_internvl_chat.py`, named in config.json's auto_map) and load it through
`AutoModel.from_pretrained(..., trust_remote_code=True)`, the command's real loading path. It is assembled
from real transformers modules (InternVLVisionModel, Qwen2ForCausalLM) and exposes the same attributes as
the InternVL2.5 remote code: `extract_feature`, `num_image_token`, `template`, `system_message`,
`img_context_token_id` (None until the caller sets it) and `language_model`. Not for real use.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    InternVLVisionConfig,
    InternVLVisionModel,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

# The default system message of the internvl2_5 conversation template of the remote code.
INTERNVL2_5_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)


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


class InternVLChatModel(PreTrainedModel):
    config_class = InternVLChatConfig
    main_input_name = "pixel_values"
    _no_split_modules = ["Qwen2DecoderLayer"]

    def __init__(self, config: InternVLChatConfig) -> None:
        super().__init__(config)
        vision = config.vision_config
        self.template = config.template
        self.system_message = INTERNVL2_5_SYSTEM_MESSAGE
        self.downsample_ratio = config.downsample_ratio
        self.num_image_token = int(
            (vision.image_size[0] // vision.patch_size[0]) ** 2 * config.downsample_ratio**2
        )
        self.img_context_token_id = None
        self.vision_model = InternVLVisionModel(vision)
        self.language_model = Qwen2ForCausalLM(config.llm_config)
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
