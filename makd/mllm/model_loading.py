"""Load an InternVL teacher in-process and expose the parts the scorers drive.

Two kinds of checkpoints:
- "hf": transformers' native InternVL ("-hf" checkpoints of InternVL2.5 / InternVL3), loaded with
  AutoModelForImageTextToText + AutoProcessor; no remote code, no patched files.
- "remote": the original remote-code InternVL2 / 2.5 / 3 checkpoints (`InternVLChatModel`, trust_remote_code=True),
  driven through what that code exposes: `extract_feature`, `num_image_token`, `img_context_token_id`,
  `language_model`, `template`, `system_message` and the conversation template of the `conversation.py` it ships
  (the same parts `model.chat` uses). What older remote code needs under the installed transformers is applied
  by `remote_code_compat` and recorded.
Both become an `InternVLParts`, so the scoring code never depends on which kind it is.
"""

from __future__ import annotations

import inspect
import json
import re
import struct
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from makd.errors import MakdError
from makd.formats.strict_json import loads_json
from makd.mllm import remote_code_compat
from makd.mllm.chat_template import IMAGE_CONTEXT_TOKEN, ChatFormat, conversation_format, internvl2_5_format
from makd.mllm.tiling import IMAGENET_MEAN, IMAGENET_STD
from makd.mllm.tiny_teacher import tiny_marker

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
    chat_format: ChatFormat
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
        return loads_json(path.read_text(encoding="utf-8"), str(path))  # a key written twice is an error
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
    attn_implementation: str = "auto",
) -> InternVLParts:
    """Load tokenizer and model in eval mode on `device`, as `InternVLParts`.

    `attn_implementation` (remote_code_compat.ATTENTION_CHOICES) is the language model's attention for remote-code
    checkpoints, chosen here rather than read from the checkpoint (`remote_code_compat.language_model_attention`).
    """
    if backend not in BACKENDS:
        raise ModelLoadError(f"--backend {backend!r} is unknown for in-process models (use {', '.join(BACKENDS)})")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if backend == "auto":
        backend = detect_backend(read_model_config(model_id, revision), model_id)
    if Path(model_id).is_dir():  # a damaged local folder is one line naming the file, not a loader traceback
        check_model_folder(Path(model_id))
    try:
        if backend == "hf":
            parts = _load_native(model_id, revision, torch_device, torch_dtype)
        else:
            parts = _load_remote(model_id, revision, torch_device, torch_dtype, attn_implementation)
    except ModelLoadError:
        raise
    except ImportError as err:  # a package the checkpoint's code imports (einops, sentencepiece, flash_attn, ...)
        whose = "its remote code" if backend == "remote" else "loading it"
        raise ModelLoadError(f"--model {model_id}: {whose} {_missing_package_message(err)}") from None
    except (OSError, ValueError) as err:  # what transformers raises for files it cannot use
        cause = f"{type(err).__name__}: {_first_line(err)}"
        raise ModelLoadError(f"--model {model_id}: cannot be loaded ({cause})") from None
    except Exception as err:
        if backend != "remote":
            raise  # transformers' own classes: a bug to report with its traceback
        # The checkpoint's own code failed: one line naming where, and what to try.
        raise ModelLoadError(
            f"--model {model_id}: its remote code failed while loading ({type(err).__name__}: {_first_line(err)}"
            f"{_remote_frame(err)}); it may not support transformers {_transformers_version()}: try another "
            "revision of the checkpoint, or serve it (vLLM, LMDeploy) and use --backend openai"
        ) from None
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
    marker = tiny_marker(model_id)
    if marker is not None:  # --model tiny: every file it labels says that its numbers mean nothing
        parts.info["tiny_teacher"] = marker
    return parts


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _remote_frame(err: BaseException) -> str:
    """ " at <file>:<line>" of the innermost frame in a checkpoint's own code (transformers_modules), if any."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "transformers_modules" in f.filename]
    return f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


def _missing_package_message(err: ImportError) -> str:
    """One line naming the missing package(s) and the pip command, from transformers' or Python's message."""
    text = " ".join(str(err).split())
    listed = re.search(r"not found in your environment: ([\w\-., ]+?)\. Run", text)
    names = [n.strip() for n in listed.group(1).split(",")] if listed else []
    if not names and getattr(err, "name", None):
        names = [err.name.split(".")[0]]
    if not names:
        return f"failed to import a package ({text[:300]})"
    pip = {"flash_attn": "flash-attn"}
    packages = " ".join(pip.get(n, n) for n in names)
    return (
        f"needs the Python package{'s' if len(names) > 1 else ''} {', '.join(names)}, "
        f"not installed here (pip install {packages})"
    )


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
    image_processor = processor.image_processor
    parts = native_parts(
        model,
        processor.tokenizer,
        mean=tuple(getattr(image_processor, "image_mean", None) or IMAGENET_MEAN),
        std=tuple(getattr(image_processor, "image_std", None) or IMAGENET_STD),
        model_id=model_id,
    )
    if int(processor.image_seq_length) != parts.tokens_per_tile:
        raise ModelLoadError(
            f"--model {model_id}: processor image_seq_length {processor.image_seq_length} != {parts.tokens_per_tile} "
            "tokens the vision tower makes per tile"
        )
    return parts


def native_parts(
    model: torch.nn.Module,
    tokenizer: Any,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    model_id: str = "model",
) -> InternVLParts:
    """`InternVLParts` of a transformers-native InternVLForConditionalGeneration already in memory (in eval mode,
    on its device and in its dtype): what loading a "-hf" checkpoint ends with, and what a model built in place
    (e.g. random weights of a real geometry, straight on a GPU) is scored through."""
    parameter = next(model.parameters())
    image_id = _check_image_token(tokenizer, model.config.image_token_id, model_id)
    vision = model.config.vision_config
    grid = (vision.image_size[0] // vision.patch_size[0]) * (vision.image_size[1] // vision.patch_size[1])
    tokens_per_tile = int(round(grid * model.config.downsample_ratio**2))
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
        mean=tuple(mean),
        std=tuple(std),
        chat_format=internvl2_5_format(),
        device=parameter.device,
        dtype=parameter.dtype,
    )


def _load_remote(
    model_id: str, revision: str | None, device: torch.device, dtype: torch.dtype, attention: str
) -> InternVLParts:
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config, config_defaults = remote_code_compat.load_remote_config(model_id, revision)
    llm_config = getattr(config, "llm_config", None)
    auto_model = (getattr(config, "auto_map", None) or {}).get("AutoModel")
    if llm_config is None or auto_model is None:
        raise ModelLoadError(
            f"--model {model_id}: config has no llm_config or no auto_map AutoModel entry; expected the "
            "InternVLChatModel remote code of an InternVL2 / 2.5 / 3 checkpoint"
        )
    architecture = (getattr(llm_config, "architectures", None) or ["?"])[0]
    try:
        chosen = remote_code_compat.language_model_attention(attention, architecture, device)
    except ValueError as err:
        raise ModelLoadError(f"--attn-implementation: {err}") from None
    remote_code_compat.set_language_model_attention(llm_config, chosen)
    shipped_class = get_class_from_dynamic_module(auto_model, model_id, revision=revision)
    model_class = remote_code_compat.with_post_init(shipped_class)
    # use_flash_attn: InternVLChatModel's own switch for its vision tower and language model (InternVL2 on).
    takes_flash = "use_flash_attn" in inspect.signature(shipped_class.__init__).parameters
    switches = {"use_flash_attn": chosen == "flash_attention_2"} if takes_flash else {}
    model = model_class.from_pretrained(model_id, config=config, revision=revision, dtype=dtype, **switches)
    try:
        rebuilt = remote_code_compat.restore_nonpersistent_buffers(model, dtype)
    except remote_code_compat.UnrestorableBufferError as err:
        raise ModelLoadError(
            f"--model {model_id}: {err}; transformers {_transformers_version()} leaves such buffers uninitialised, so "
            "its answers could not be trusted (serve the model and use --backend openai)"
        ) from None
    model = model.to(device).eval()
    _check_decoder_runs(model.language_model, device, dtype)
    missing = [name for name in REMOTE_ATTRIBUTES if not hasattr(model, name)]
    if missing:
        raise ModelLoadError(
            f"--model {model_id}: {type(model).__name__} lacks {', '.join(missing)}; "
            "expected the InternVLChatModel remote code of an InternVL2 / 2.5 / 3 checkpoint"
        )
    chat_format = _checkpoint_chat_format(model, model_id)
    tokenizer = _load_remote_tokenizer(model_id, revision, chat_format)
    # model.chat sets this from the tokenizer before every call; do the same once.
    model.img_context_token_id = _check_image_token(tokenizer, None, model_id)
    vision = getattr(config, "vision_config", None)
    size = getattr(config, "force_image_size", None) or getattr(vision, "image_size", 448)
    tile_size = int(size[0] if isinstance(size, (list, tuple)) else size)
    language_model = model.language_model
    compat = [remote_code_compat.POST_INIT] if remote_code_compat.applied_post_init(model) else []
    compat += [remote_code_compat.BUFFERS] if rebuilt else []
    compat += [remote_code_compat.CONFIG_DEFAULTS] if config_defaults else []
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
        chat_format=chat_format,
        device=device,
        dtype=dtype,
        info={
            "attn_implementation": chosen,
            "compat": compat,
            "tokenizer_class": type(tokenizer).__name__,
        },
    )


@torch.inference_mode()
def _check_decoder_runs(language_model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """One 2-token forward with a cache, so remote code that cannot run under the installed transformers (e.g.
    InternVL2-4B's Phi-3 code calls DynamicCache.from_legacy_cache, gone in transformers 5) stops at load time
    with one line, not in the middle of a run."""
    embeds = language_model.get_input_embeddings()(torch.tensor([[0, 0]], device=device))
    language_model.base_model(inputs_embeds=embeds.to(dtype), use_cache=True)


def _checkpoint_chat_format(model: torch.nn.Module, model_id: str) -> ChatFormat:
    """The conversation template the checkpoint's config names, from the conversation.py it ships, with the
    system message its model uses (config.system_message, else the template's), as `model.chat` takes them."""
    module = sys.modules.get(type(model).__module__)
    get_conv_template = getattr(module, "get_conv_template", None)
    if get_conv_template is None:
        raise ModelLoadError(
            f"--model {model_id}: its modeling code has no get_conv_template (from the conversation.py InternVL "
            "checkpoints ship); cannot build the prompt model.chat builds"
        )
    try:
        return conversation_format(get_conv_template, str(model.template), str(model.system_message))
    except ValueError as err:
        raise ModelLoadError(f"--model {model_id}: {err}") from None


def _load_remote_tokenizer(model_id: str, revision: str | None, chat_format: ChatFormat) -> Any:
    """The tokenizer as the official scripts load it (use_fast=False: InternLM2's SentencePiece class where the
    checkpoint has one). If the checkpoint also offers a fast class that tokenizes the prompt differently, the
    run goes on with the slow one and says so: a script of the user's with the default use_fast=True would not
    reproduce these numbers."""
    import warnings

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision, trust_remote_code=True, use_fast=False)
    if getattr(tokenizer, "is_fast", False):
        return tokenizer  # the checkpoint has only a fast tokenizer
    try:
        fast = AutoTokenizer.from_pretrained(model_id, revision=revision, trust_remote_code=True, use_fast=True)
    except Exception:  # noqa: BLE001 - a fast class that cannot even load is no concern of the slow path
        return tokenizer
    if getattr(fast, "is_fast", False):
        probe = chat_format.prompt("Is the object red? Yes or No.", 1, 4)
        slow_ids, fast_ids = tokenizer(probe)["input_ids"], fast(probe)["input_ids"]
        if list(slow_ids) != list(fast_ids):
            warnings.warn(
                f"--model {model_id}: its fast tokenizer ({type(fast).__name__}) tokenizes the prompt differently "
                f"from the slow one ({len(fast_ids)} vs {len(slow_ids)} ids); using the slow one, as the official "
                "scripts do (AutoTokenizer use_fast=False)",
                stacklevel=3,
            )
    return tokenizer
