"""Load an InternVL teacher in-process and expose the parts the scorers drive.

Two kinds of checkpoints:
- "hf": transformers' native InternVL ("-hf" checkpoints of InternVL2.5 / InternVL3), loaded with
  AutoModelForImageTextToText + AutoProcessor; no remote code, no patched files.
- "remote": the original remote-code InternVL2.5 checkpoints (`InternVLChatModel`, trust_remote_code=True),
  driven through what that code exposes: `extract_feature`, `num_image_token`, `img_context_token_id`,
  `language_model`, `template`, `system_message` (the same parts `model.chat` uses).
Both become an `InternVLParts`, so the scoring code never depends on which kind it is.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from makd.errors import MakdError
from makd.mllm.chat_template import DEFAULT_SYSTEM_MESSAGE, IMAGE_CONTEXT_TOKEN, TEMPLATE_NAME
from makd.mllm.tiling import IMAGENET_MEAN, IMAGENET_STD

BACKENDS = ("auto", "hf", "remote")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
REMOTE_ATTRIBUTES = ("extract_feature", "num_image_token", "language_model", "template", "system_message")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Any one of these makes a tokenizer transformers can load (fast json, sentencepiece, byte-level BPE).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


class ModelLoadError(MakdError, RuntimeError):
    """The teacher model cannot be loaded or is not an InternVL model this code can drive."""


@dataclass
class InternVLParts:
    """What scoring needs from an InternVL model, whichever class implements it.

    encode_images: pixel values [n_tiles, 3, S, S] -> features [n_tiles, tokens_per_tile, hidden]
    embed_tokens:  ids [B, L] -> embeddings [B, L, hidden]
    decoder:       the language model without its head (takes inputs_embeds, cache or past_key_values, use_cache)
    lm_head:       hidden [..., hidden] -> logits [..., vocab]
    generator:     a module whose `generate(inputs_embeds=...)` continues a prompt (the official path)
    """

    backend: str
    model: torch.nn.Module
    tokenizer: Any
    encode_images: Callable[[torch.Tensor], torch.Tensor]
    embed_tokens: torch.nn.Module
    decoder: torch.nn.Module
    lm_head: torch.nn.Module
    generator: torch.nn.Module
    image_context_id: int
    tokens_per_tile: int
    tile_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    system_message: str
    device: torch.device
    dtype: torch.dtype
    info: dict = field(default_factory=dict)


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" = cuda when available, else mps, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ModelLoadError(f"--device {name!r} is not a device (use auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {name} asked for CUDA but no CUDA device is available (use --device cpu)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto" = bfloat16 on accelerators (as the official script), float32 on CPU."""
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if name not in DTYPES:
        raise ModelLoadError(f"--dtype {name!r} is unknown (use auto, {', '.join(DTYPES)})")
    return DTYPES[name]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelLoadError(f"{path}: not UTF-8 text; the model folder is damaged (copy it again)") from None
    except json.JSONDecodeError as err:
        raise ModelLoadError(
            f"{path}: not valid JSON ({err.msg}: line {err.lineno} column {err.colno}); "
            "the model folder is damaged (copy or download it again)"
        ) from None


def check_safetensors(path: Path) -> None:
    """Fail with one line when `path` is not a complete safetensors file (a cut copy or download).

    Layout: 8-byte little-endian header length N, N bytes of JSON {name: {"data_offsets": [begin, end]}},
    then the tensor bytes; the file must hold exactly 8 + N + the largest end offset bytes.
    """
    size = path.stat().st_size
    again = "copy or download it again"
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{path}: truncated safetensors file ({size} bytes, no header); {again}")
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            raise ModelLoadError(
                f"{path}: truncated safetensors file ({size} bytes, its header alone needs {8 + length}); {again}"
            )
        try:
            header = json.loads(fh.read(length))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise ModelLoadError(f"{path}: not a safetensors file (unreadable header); {again}") from None
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        raise ModelLoadError(f"{path}: truncated safetensors file ({size} of {needed} bytes); {again}")


def _read_local_config(folder: Path) -> dict:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"--model {folder}: folder has no config.json (is it a saved model?)")
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path}: holds a JSON {type(config).__name__}, not a model config object")
    return config


def check_model_files(folder: Path) -> None:
    """Fail with one line naming the file when weights or tokenizer of a local folder are missing or cut."""
    weights: list[Path] = []
    for name in WEIGHT_INDEXES:
        index_path = folder / name
        if index_path.is_file():
            index = _read_json(index_path)
            shards = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, dict) else []
            if not shards:
                raise ModelLoadError(f"{index_path}: lists no weight files (no weight_map)")
            for shard in shards:
                if not (folder / shard).is_file():
                    raise ModelLoadError(f"{folder / shard}: weight file listed in {name} is missing")
            weights += [folder / shard for shard in shards]
    weights += [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        raise ModelLoadError(
            f"--model {folder}: no weights in the folder (expected {' or '.join(WEIGHT_FILES)}, or a sharded index); "
            "was the download finished?"
        )
    for path in weights:
        if path.suffix == ".safetensors":
            check_safetensors(path)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"--model {folder}: no tokenizer in the folder (expected one of {', '.join(TOKENIZER_FILES)}); "
            "copy the tokenizer files of the checkpoint next to its weights"
        )


def check_model_folder(folder: Path) -> dict:
    """Check a local model folder before loading it; returns its config.json.

    Each problem is one line naming the file: no or broken config.json, no weights, a missing shard, a
    truncated safetensors file, no tokenizer.
    """
    config = _read_local_config(folder)
    check_model_files(folder)
    return config


def read_model_config(model_id: str, revision: str | None = None) -> dict:
    """The raw config.json of a local folder or hub id, without importing any remote code."""
    local = Path(model_id)
    if local.is_dir():
        return _read_local_config(local)
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(model_id, revision=revision)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"--model {model_id}: not a local folder and not loadable from the hub ({first}); "
            "pass a downloaded model folder"
        ) from None
    return config


def detect_backend(config: dict, model_id: str) -> str:
    """ "hf" for native InternVL configs, "remote" for InternVLChatModel remote-code configs."""
    model_type = config.get("model_type", "")
    if model_type == "internvl":
        return "hf"
    auto_map = config.get("auto_map") or {}
    if model_type == "internvl_chat" or "AutoModel" in auto_map:
        return "remote"
    raise ModelLoadError(
        f"--model {model_id}: model_type {model_type!r} is not InternVL (expected a native 'internvl' "
        "checkpoint or a remote-code InternVLChatModel); for other servers use --backend openai"
    )


def load_internvl(
    model_id: str,
    backend: str = "auto",
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
) -> InternVLParts:
    """Load tokenizer and model in eval mode on `device`, as `InternVLParts`."""
    if backend not in BACKENDS:
        raise ModelLoadError(f"--backend {backend!r} is unknown for in-process models (use {', '.join(BACKENDS)})")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if backend == "auto":
        backend = detect_backend(read_model_config(model_id, revision), model_id)
    if Path(model_id).is_dir():  # a damaged local folder is one line naming the file, not a loader traceback
        check_model_folder(Path(model_id))
    loader = _load_native if backend == "hf" else _load_remote
    try:
        parts = loader(model_id, revision, torch_device, torch_dtype)
    except (OSError, ValueError) as err:  # what transformers raises for files it cannot use
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"--model {model_id}: cannot be loaded ({type(err).__name__}: {first[:300]})") from None
    parts.info.update(
        {
            "backend": backend,
            "model": model_id,
            "revision": revision or getattr(parts.model.config, "_commit_hash", None),
            "model_class": type(parts.model).__name__,
            "language_model_class": type(parts.decoder).__name__,
            "dtype": str(torch_dtype).replace("torch.", ""),
            "device": str(torch_device),
        }
    )
    return parts


def _check_image_token(tokenizer: Any, expected_id: int | None, model_id: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN)
    if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
        raise ModelLoadError(f"--model {model_id}: the tokenizer has no {IMAGE_CONTEXT_TOKEN} token")
    if expected_id is not None and token_id != expected_id:
        # The image features replace the embeddings at this id; a mismatch would leave the image out silently.
        raise ModelLoadError(
            f"--model {model_id}: tokenizer id of {IMAGE_CONTEXT_TOKEN} is {token_id} but the model config says "
            f"{expected_id}; tokenizer and model do not belong together"
        )
    return int(token_id)


def _load_native(model_id: str, revision: str | None, device: torch.device, dtype: torch.dtype) -> InternVLParts:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_id, revision=revision)
    model = AutoModelForImageTextToText.from_pretrained(model_id, revision=revision, dtype=dtype)
    model = model.to(device).eval()
    if getattr(model.config, "model_type", "") != "internvl":
        raise ModelLoadError(f"--model {model_id}: loaded {type(model).__name__}, not a native InternVL model")
    tokenizer = processor.tokenizer
    image_id = _check_image_token(tokenizer, model.config.image_token_id, model_id)
    vision = model.config.vision_config
    grid = (vision.image_size[0] // vision.patch_size[0]) * (vision.image_size[1] // vision.patch_size[1])
    tokens_per_tile = int(round(grid * model.config.downsample_ratio**2))
    if int(processor.image_seq_length) != tokens_per_tile:
        raise ModelLoadError(
            f"--model {model_id}: processor image_seq_length {processor.image_seq_length} != {tokens_per_tile} "
            "tokens the vision tower makes per tile"
        )
    image_processor = processor.image_processor
    inner = model.model

    def encode_images(pixels: torch.Tensor) -> torch.Tensor:
        out = inner.get_image_features(pixel_values=pixels)
        # transformers 5 returns an output object (features in pooler_output); 4.x returned the tensor
        return out.pooler_output if hasattr(out, "pooler_output") else out

    return InternVLParts(
        backend="hf",
        model=model,
        tokenizer=tokenizer,
        encode_images=encode_images,
        embed_tokens=model.get_input_embeddings(),
        decoder=inner.language_model,
        lm_head=model.get_output_embeddings(),
        generator=model,
        image_context_id=image_id,
        tokens_per_tile=tokens_per_tile,
        tile_size=int(vision.image_size[0]),
        mean=tuple(getattr(image_processor, "image_mean", None) or IMAGENET_MEAN),
        std=tuple(getattr(image_processor, "image_std", None) or IMAGENET_STD),
        system_message=DEFAULT_SYSTEM_MESSAGE,
        device=device,
        dtype=dtype,
    )


def _load_remote(model_id: str, revision: str | None, device: torch.device, dtype: torch.dtype) -> InternVLParts:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision, trust_remote_code=True)
    model = AutoModel.from_pretrained(model_id, revision=revision, dtype=dtype, trust_remote_code=True)
    model = model.to(device).eval()
    missing = [name for name in REMOTE_ATTRIBUTES if not hasattr(model, name)]
    if missing:
        raise ModelLoadError(
            f"--model {model_id}: {type(model).__name__} lacks {', '.join(missing)}; "
            "expected the InternVL2.5 InternVLChatModel remote code"
        )
    if model.template != TEMPLATE_NAME:
        raise ModelLoadError(
            f"--model {model_id}: chat template {model.template!r} is not {TEMPLATE_NAME!r}, the only template "
            "reproduced here; use an InternVL2.5 checkpoint or serve the model and use --backend openai"
        )
    # model.chat sets this from the tokenizer before every call; do the same once.
    model.img_context_token_id = _check_image_token(tokenizer, None, model_id)
    config = model.config
    vision = getattr(config, "vision_config", None)
    size = getattr(config, "force_image_size", None) or getattr(vision, "image_size", 448)
    tile_size = int(size[0] if isinstance(size, (list, tuple)) else size)
    language_model = model.language_model
    return InternVLParts(
        backend="remote",
        model=model,
        tokenizer=tokenizer,
        encode_images=model.extract_feature,
        embed_tokens=language_model.get_input_embeddings(),
        decoder=language_model.base_model,
        lm_head=language_model.get_output_embeddings(),
        generator=language_model,
        image_context_id=int(model.img_context_token_id),
        tokens_per_tile=int(model.num_image_token),
        tile_size=tile_size,
        mean=IMAGENET_MEAN,  # the official load_image normalises with ImageNet statistics
        std=IMAGENET_STD,
        system_message=str(model.system_message),
        device=device,
        dtype=dtype,
    )
