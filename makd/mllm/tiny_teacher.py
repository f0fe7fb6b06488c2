"""`--model tiny`: a tiny random teacher built on this machine, to try stage 2's plumbing offline.

Its answers mean nothing. It exists so that a new user (and the quickstart's test) can run stage 2 and train on its
file without a GPU, a download or a server: the command loads it through its real loading path (config.json,
weights and tokenizer saved with save_pretrained; transformers' own classes), so everything but the numbers is
what a real teacher goes through.

- image level: a native InternVL (InternVLForConditionalGeneration + InternVLProcessor, 448-px tiles, 16 image
  tokens per tile, a 2-layer Qwen2-style language model);
- class level (`--level class`): a 2-layer Qwen2 causal LM with a ChatML chat template.

Both share a byte-level BPE tokenizer trained here with `tokenizers` (single-token "Yes" and "No", InternVL's
special tokens). They are built once and kept in the user's cache folder, `$MAKD_CACHE_DIR`, else
`$XDG_CACHE_HOME/makd`, else `~/.cache/makd` (`tiny-internvl-v1/`, `tiny-causal-lm-v1/`); each folder holds a
`makd_tiny_teacher.json` marker, which the loaders copy into the output's sidecar (`teacher.tiny_teacher`), so a
file labelled by a tiny teacher says so wherever it goes. The tests and benchmarks build the same models where
they like (makd/demo/tiny_internvl.py, tiny_causal_lm.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import makd
from makd.mllm.chat_template import DEFAULT_SYSTEM_MESSAGE

TINY_MODEL = "tiny"  # the --model value
MARKER = "makd_tiny_teacher.json"
NOTICE = (
    "--model tiny: a tiny RANDOM teacher built on this machine; its answers (and anything trained on them) mean "
    "nothing: it only tries the plumbing. Use a real model (e.g. OpenGVLab/InternVL3-2B-hf) for numbers"
)
# Bump when the models change, so a cached folder of an older makd is never taken for the current one.
VERSION = 1
FOLDERS = {"image": f"tiny-internvl-v{VERSION}", "class": f"tiny-causal-lm-v{VERSION}"}

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
NAMED_IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
_CORPUS = [
    "system\nuser\nassistant\n",
    DEFAULT_SYSTEM_MESSAGE,
    "Yes No Yes No Yes No",
    "Is the object red? Does it have wings? Is there water in the background? Can you see a wheel?",
    "Are the leaves green? Is the animal furry? Does the image show a striped pattern? Is it outdoors?",
    "The answer must always be either Yes or No (do not provide any other response).",
]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Geometry of a tiny InternVL. Tokens per tile = (448 / patch)^2 / 4, so 256 needs patch 14."""

    tokens_per_tile: int = 16
    vision_width: int = 32
    vision_layers: int = 1
    vision_heads: int = 2
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    init_range: float = 0.2  # larger than usual so random P(yes) spread over (0, 1), which makes checks bite
    seed: int = 0
    legacy_cache: bool = False  # the tests' remote-code stand-in only: InternLM2's decoder interface

    @property
    def patch_size(self) -> int:
        side = int(round((4 * self.tokens_per_tile) ** 0.5))
        if side * side != 4 * self.tokens_per_tile or 448 % side:
            raise ValueError(f"tokens_per_tile {self.tokens_per_tile} does not give a square grid dividing 448")
        return 448 // side


def train_tiny_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer wrapped for transformers, with single-token "Yes" and "No"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(NAMED_IMAGE_TOKENS),
    )


def vision_config(spec: TinySpec) -> dict:
    return {
        "hidden_size": spec.vision_width,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
        "intermediate_size": 2 * spec.vision_width,
        "image_size": 448,
        "patch_size": spec.patch_size,
        "initializer_range": spec.init_range,
    }


def text_config(spec: TinySpec, vocab_size: int) -> dict:
    return {
        "vocab_size": vocab_size,
        "hidden_size": spec.text_width,
        "intermediate_size": 2 * spec.text_width,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "max_position_embeddings": 16384,
        "initializer_range": spec.init_range,
        "tie_word_embeddings": False,
    }


def save_tiny_internvl(path: str | os.PathLike, spec: TinySpec | None = None) -> Path:
    """Save a tiny random native InternVL (model, processor, tokenizer) to `path` with save_pretrained."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    spec, path = spec or TinySpec(), Path(path)
    tokenizer = train_tiny_tokenizer()
    torch.manual_seed(spec.seed)
    config = InternVLConfig(
        vision_config=vision_config(spec),
        text_config={"model_type": "qwen2", **text_config(spec, len(tokenizer))},
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=spec.tokens_per_tile,
        tie_word_embeddings=False,
    )
    model = InternVLForConditionalGeneration(config).eval()
    image_processor = GotOcr2ImageProcessor(
        size={"height": 448, "width": 448},
        crop_to_patches=True,
        max_patches=12,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(),
        image_seq_length=spec.tokens_per_tile,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_causal_lm(path: str | os.PathLike, width: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a random Qwen2ForCausalLM (init range 0.2, so answers spread over (0, 1)) and its chat tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    tokenizer = train_tiny_tokenizer()
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.2,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def cache_root() -> Path:
    """makd's cache folder: $MAKD_CACHE_DIR, else $XDG_CACHE_HOME/makd, else ~/.cache/makd."""
    if os.environ.get("MAKD_CACHE_DIR"):
        return Path(os.environ["MAKD_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "makd"


def tiny_marker(model: str | os.PathLike) -> dict | None:
    """The marker of a tiny-teacher folder (what it is, that its numbers mean nothing), or None for any other."""
    marker = Path(model) / MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"note": NOTICE}


def tiny_teacher_path(level: str = "image") -> Path:
    """The cached tiny teacher of `level` ("image": InternVL, "class": causal LM), built on first use.

    Built in a temporary folder beside its final place and renamed there when complete, so an interrupted
    build leaves nothing half-written and two processes building at once each get a whole model (the second
    rename finds the folder taken and keeps the first).
    """
    from makd.mllm.errors import ExtractionError

    root = cache_root()
    final = root / FOLDERS[level]
    if (final / MARKER).is_file():
        return final
    if final.exists():
        raise ExtractionError(f"--model tiny: {final} exists but holds no tiny teacher ({MARKER}); remove it")
    try:
        root.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    except OSError as err:
        raise ExtractionError(
            f"--model tiny: cannot create the cache folder {root} ({err.strerror or err}); "
            "set MAKD_CACHE_DIR to a writable folder"
        ) from None
    try:
        if level == "image":
            spec = TinySpec()
            save_tiny_internvl(building, spec)
            what = {"kind": "tiny random InternVL (transformers' native classes)", "spec": asdict(spec)}
        else:
            save_tiny_causal_lm(building)
            what = {"kind": "tiny random Qwen2 causal LM with a ChatML template"}
        marker = {**what, "level": level, "version": VERSION, "makd_version": makd.__version__, "note": NOTICE}
        (building / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(building, final)
        except OSError:  # another process finished first: its folder is as good as ours
            if not (final / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final
