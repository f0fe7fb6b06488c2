"""Tiny InternVL checkpoints assembled from the real remote code of the OpenGVLab/InternVL repository.

The paper's teachers (InternVL2-8B, InternVL2.5-8B) exist only as remote-code checkpoints: an `InternVLChatModel`
whose language model is InternLM2 (2B/8B/26B, its own remote code) or Qwen2 (1B/4B/38B/78B), loaded with
`trust_remote_code=True`. This module builds such a folder the way the hub ships one (the Python files flat beside
config.json, named in its auto_map) from the repository's own files at a chosen commit, with tiny random weights,
the real tile geometry (448-px tiles, 14-px patches, 256 image tokens per tile) and a tokenizer of the family's
kind (SentencePiece BPE with byte fallback for InternLM2, byte-level BPE for Qwen2).

The only changes to the repository's files are import lines, listed in IMPORT_EDITS: the repository imports its
own package (`internvl.model.internlm2...`), a hub folder imports its neighbours (`.modeling_internlm2`); the LoRA
(peft) and Phi-3 imports, which the InternLM2 and Qwen2 checkpoints do not ship, are dropped. Each edit must
match exactly one line, so a changed upstream file stops the assembly instead of being patched silently.

The repository is read from a local git mirror (`git show COMMIT:PATH`); nothing is downloaded and none of its
code is kept in makd. Used by the real-teacher tests and the GPU check; the numbers such a model gives mean nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from makd.errors import MakdError
from makd.mllm.remote_code_compat import load_remote_config
from makd.mllm.tiny_teacher import TinySpec, text_config

CODE_ROOT = "internvl_chat/internvl"
# Flat file name in a hub folder -> its path in the repository.
REMOTE_CODE_FILES = {
    "modeling_internvl_chat.py": f"{CODE_ROOT}/model/internvl_chat/modeling_internvl_chat.py",
    "configuration_internvl_chat.py": f"{CODE_ROOT}/model/internvl_chat/configuration_internvl_chat.py",
    "modeling_intern_vit.py": f"{CODE_ROOT}/model/internvl_chat/modeling_intern_vit.py",
    "configuration_intern_vit.py": f"{CODE_ROOT}/model/internvl_chat/configuration_intern_vit.py",
    "conversation.py": f"{CODE_ROOT}/conversation.py",
    "modeling_internlm2.py": f"{CODE_ROOT}/model/internlm2/modeling_internlm2.py",
    "configuration_internlm2.py": f"{CODE_ROOT}/model/internlm2/configuration_internlm2.py",
    "tokenization_internlm2.py": f"{CODE_ROOT}/model/internlm2/tokenization_internlm2.py",
    "tokenization_internlm2_fast.py": f"{CODE_ROOT}/model/internlm2/tokenization_internlm2_fast.py",
}
# The InternVL2.5 release (2024-12-17): its InternVLChatModel.__init__ never calls post_init(), as every remote
# InternVL checkpoint released before mid-2025; HEAD's does (upstream commit eecca2a, 2025-08-26).
INTERNVL2_5_RELEASE = "22839ce"
LANGUAGE_MODELS = ("internlm2", "qwen2")
# The families the paper and its users name: (code commit, language model, template its config names).
FAMILIES = {
    "internvl2_5-8b": ("HEAD", "internlm2", "internvl2_5"),  # InternVL2.5-2B/8B/26B: InternLM2.5 LM
    "internvl2_5-8b-release": (INTERNVL2_5_RELEASE, "internlm2", "internvl2_5"),  # code without post_init()
    "internvl2_5-1b": ("HEAD", "qwen2", "internvl2_5"),  # InternVL2.5-1B/4B/38B/78B and InternVL3: Qwen2 LM
    "internvl2-8b": ("HEAD", "internlm2", "internlm2-chat"),  # InternVL2-2B/8B/26B
    "internvl2-1b": ("HEAD", "qwen2", "Hermes-2"),  # InternVL2-1B
    # InternVL2-4B's template; its Phi-3 code calls DynamicCache.from_legacy_cache, gone in transformers 5
    "phi3-chat": ("HEAD", "qwen2", "phi3-chat"),
}


@dataclass(frozen=True)
class ImportEdit:
    """One import line of a repository file as a hub folder has it (`new` None: the line is dropped)."""

    file: str
    old: str
    new: str | None
    why: str


IMPORT_EDITS = (
    ImportEdit(
        "modeling_internvl_chat.py",
        "from internvl.conversation import get_conv_template",
        "from .conversation import get_conv_template",
        "package import -> sibling file",
    ),
    ImportEdit(
        "modeling_internvl_chat.py",
        "from internvl.model.internlm2.modeling_internlm2 import InternLM2ForCausalLM",
        "from .modeling_internlm2 import InternLM2ForCausalLM",
        "package import -> sibling file",
    ),
    ImportEdit(
        "modeling_internvl_chat.py",
        "from internvl.model.phi3.modeling_phi3 import Phi3ForCausalLM",
        None,
        "Phi-3 code ships only with the Phi-3 checkpoint (InternVL2-4B)",
    ),
    ImportEdit(
        "modeling_internvl_chat.py",
        "from peft import LoraConfig, get_peft_model",
        None,
        "LoRA fine-tuning only; hub folders do not import peft",
    ),
    ImportEdit(
        "configuration_internvl_chat.py",
        "from internvl.model.internlm2.configuration_internlm2 import InternLM2Config",
        "from .configuration_internlm2 import InternLM2Config",
        "package import -> sibling file",
    ),
    ImportEdit(
        "configuration_internvl_chat.py",
        "from internvl.model.phi3.configuration_phi3 import Phi3Config",
        None,
        "Phi-3 code ships only with the Phi-3 checkpoint (InternVL2-4B)",
    ),
)


class RemoteCodeError(MakdError, RuntimeError):
    """The InternVL repository mirror is missing, lacks the commit, or its files no longer match IMPORT_EDITS."""


def read_repository_file(git_dir: str | Path, commit: str, path: str) -> str:
    """The text of `path` at `commit` in a git mirror (a bare or non-bare repository)."""
    try:
        done = subprocess.run(
            ["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        raise RemoteCodeError("git is not installed; it reads the InternVL repository mirror") from None
    if done.returncode != 0:
        raise RemoteCodeError(f"{git_dir}: cannot read {path} at {commit} ({done.stderr.strip()[:200]})")
    return done.stdout


def apply_import_edits(name: str, text: str, edits: Iterable[ImportEdit] = IMPORT_EDITS) -> str:
    """`text` of file `name` with its import edits applied; each must match exactly one whole line."""
    lines = text.split("\n")
    for edit in (e for e in edits if e.file == name):
        where = [i for i, line in enumerate(lines) if line == edit.old]
        if len(where) != 1:
            raise RemoteCodeError(
                f"{name}: expected the line {edit.old!r} once, found it {len(where)} times; "
                "the upstream file changed, so the import edits need a look"
            )
        if edit.new is None:
            del lines[where[0]]
        else:
            lines[where[0]] = edit.new
    return "\n".join(lines)


def flatten_remote_code(git_dir: str | Path, commit: str, out: str | Path) -> list[str]:
    """Write the remote-code files of `commit` flat into `out`, with only IMPORT_EDITS applied; returns the names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, path in REMOTE_CODE_FILES.items():
        text = apply_import_edits(name, read_repository_file(git_dir, commit, path))
        (out / name).write_text(text, encoding="utf-8")
    return sorted(REMOTE_CODE_FILES)


# The real tile geometry: 448-px tiles, patch 14, 256 image tokens per tile (TinySpec's other widths stay tiny).
REAL_TILE_GEOMETRY = TinySpec(tokens_per_tile=256)


@dataclass(frozen=True)
class RemoteCheckpointSpec:
    """What to assemble: the language model family, the conversation template named in config.json, the
    attention implementation written into llm_config (the InternVL training code writes flash_attention_2),
    and whether the tokenizer_config names the fast InternLM2 tokenizer too."""

    language_model: str = "internlm2"
    template: str = "internvl2_5"
    llm_attn_implementation: str | None = "eager"
    fast_tokenizer: bool = False
    system_message: str | None = None  # written to config.json when set (the model then uses it over the template's)
    geometry: TinySpec = REAL_TILE_GEOMETRY


# Special tokens of the chat format and the image tokens InternVL adds to every language model's vocabulary.
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
_CORPUS = [
    "system\nuser\nassistant\n",
    "Yes No Yes No Yes No. Yes. No.",
    "<|im_start|>assistant\nYes<|im_end|>\n<|im_start|>assistant\nNo<|im_end|>\n",
    "Is the object red? Does it have wings? Is there water in the background? Can you see a wheel?",
    "Are the leaves green? Is the animal furry? Does the image show a striped pattern? Is it outdoors?",
    "The answer must always be either Yes or No (do not provide any other response).",
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。",
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。",
]


def write_internlm2_tokenizer(out: Path, fast: bool = False, vocab_size: int = 400) -> int:
    """A SentencePiece BPE model with byte fallback (as InternLM2's: <unk>, <s>, </s> at 0, 1, 2, the chat tokens as
    pieces) plus tokenizer_config.json naming the remote tokenizer class; returns the vocabulary size with the
    InternVL tokens added after the pieces, as in the real checkpoints (92,544 pieces + 9 added)."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 20),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        user_defined_symbols=CHAT_TOKENS,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(model.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = processor.get_piece_size()

    def entry(content: str) -> dict:
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                "special": True}  # fmt: skip

    added = {str(i): entry(processor.id_to_piece(i)) for i in (0, 1, 2)}
    added.update({str(processor.piece_to_id(t)): entry(t) for t in CHAT_TOKENS})
    added.update({str(pieces + i): entry(t) for i, t in enumerate(INTERNVL_TOKENS)})
    config = {
        "auto_map": {
            "AutoTokenizer": [
                "tokenization_internlm2.InternLM2Tokenizer",
                "tokenization_internlm2_fast.InternLM2TokenizerFast" if fast else None,
            ]
        },
        "tokenizer_class": "InternLM2Tokenizer",
        "added_tokens_decoder": added,
        "additional_special_tokens": CHAT_TOKENS + INTERNVL_TOKENS,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 16384,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return pieces + len(INTERNVL_TOKENS)


def write_qwen2_tokenizer(out: Path) -> int:
    """The byte-level BPE tokenizer of the tiny stand-ins (Qwen2's kind: no BOS, ChatML tokens); returns its size."""
    from makd.demo.tiny_internvl import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    tokenizer.save_pretrained(out)
    return len(tokenizer)


def _llm_config(spec: RemoteCheckpointSpec, vocab_size: int) -> dict:
    common = {
        **text_config(spec.geometry, vocab_size),
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "torch_dtype": "bfloat16",
    }
    if spec.language_model == "internlm2":  # InternLM2.5-7B-chat's shape: dynamic NTK RoPE, no biases
        llm = {
            **common,
            "architectures": ["InternLM2ForCausalLM"],
            "model_type": "internlm2",
            "auto_map": {
                "AutoConfig": "configuration_internlm2.InternLM2Config",
                "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
            },
            "rope_scaling": {"type": "dynamic", "factor": 2.0},
            "bias": False,
            "rms_norm_eps": 1e-5,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
        }
    elif spec.language_model == "qwen2":  # Qwen2.5-0.5B-Instruct's shape (InternVL2.5-1B)
        llm = {
            **common,
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "rms_norm_eps": 1e-6,
            "use_sliding_window": False,
            "hidden_act": "silu",
        }
    else:
        raise ValueError(f"language model {spec.language_model!r} is not one of {LANGUAGE_MODELS}")
    if spec.llm_attn_implementation is not None:
        llm["attn_implementation"] = spec.llm_attn_implementation
    return llm


def checkpoint_config(spec: RemoteCheckpointSpec, vocab_size: int) -> dict:
    """config.json of an InternVL2.5-style remote-code checkpoint with the tiny widths of `spec.geometry`."""
    g = spec.geometry
    config = {
        "architectures": ["InternVLChatModel"],
        "auto_map": {
            "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel",
            "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
        },
        "model_type": "internvl_chat",
        "template": spec.template,
        "downsample_ratio": 0.5,
        "dynamic_image_size": True,
        "force_image_size": 448,
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "ps_version": "v2",
        "select_layer": -1,
        "use_thumbnail": True,
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "pad2square": False,
        "torch_dtype": "bfloat16",
        "vision_config": {
            "architectures": ["InternVisionModel"],
            "model_type": "intern_vit_6b",
            "image_size": 448,
            "patch_size": g.patch_size,
            "hidden_size": g.vision_width,
            "intermediate_size": 4 * g.vision_width,
            "num_attention_heads": g.vision_heads,
            "num_hidden_layers": g.vision_layers,
            "qkv_bias": True,
            "qk_normalization": False,
            "norm_type": "layer_norm",
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-6,
            "drop_path_rate": 0.0,
            "use_flash_attn": False,
            "initializer_range": g.init_range,
            "initializer_factor": 1.0,
        },
        "llm_config": _llm_config(spec, vocab_size),
    }
    if spec.system_message is not None:
        config["system_message"] = spec.system_message
    return config


def assemble_checkpoint(code_dir: str | Path, out: str | Path, spec: RemoteCheckpointSpec | None = None) -> Path:
    """A tiny remote-code InternVL checkpoint in `out` from flattened real files in `code_dir`.

    The weights come from the model's own classes (built from `out` with trust_remote_code), re-drawn from
    N(0, init_range) for every matrix under a fixed seed, and saved as model.safetensors.
    """
    import shutil

    from transformers import AutoModel

    spec = spec or RemoteCheckpointSpec()
    code_dir, out = Path(code_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(code_dir / name, out / name)
    vocab = write_internlm2_tokenizer(out, spec.fast_tokenizer) if spec.language_model == "internlm2" else None
    vocab = vocab if vocab is not None else write_qwen2_tokenizer(out)
    config = checkpoint_config(spec, vocab)
    # Weights are made with eager attention whatever config.json will say (flash-attn is absent here).
    build = {**config, "llm_config": {**config["llm_config"], "attn_implementation": "eager"}}
    (out / "config.json").write_text(json.dumps(build, indent=2, ensure_ascii=False), encoding="utf-8")
    loaded, _ = load_remote_config(str(out))  # as the stage-2 loader loads it (remote_code_compat)
    torch.manual_seed(spec.geometry.seed)
    model = AutoModel.from_config(loaded, trust_remote_code=True, dtype=torch.float32)
    if not hasattr(model, "all_tied_weights_keys"):  # code released before mid-2025 never calls post_init()
        model.post_init()
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.dim() >= 2:
                parameter.normal_(0.0, spec.geometry.init_range)
    # The state dict as the hub stores it; save_pretrained would need transformers 5's tied-weights contract,
    # which InternLM2's code (a list of tied keys) predates.
    from safetensors.torch import save_file

    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return out


def reference_model(folder: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of a remote-code checkpoint built as transformers 4, which the code was written for, built
    it: the real class constructed on the CPU under default dtype `dtype` (every buffer from its own __init__) and
    the checkpoint's tensors loaded into it with torch; the tokenizer as the official scripts load it."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder = Path(folder)
    config, _ = load_remote_config(str(folder))
    model_class = get_class_from_dynamic_module(config.auto_map["AutoModel"], str(folder))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = model_class(config, use_flash_attn=False)
    finally:
        torch.set_default_dtype(previous)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True, use_fast=False)
    return model.eval(), tokenizer


@torch.inference_mode()
def chat_p_yes(model, tokenizer, pixels: torch.Tensor, question: str, yes_id: int, no_id: int) -> tuple[float, list]:
    """(P(yes), prompt ids) of one question by the real code: `model.chat` builds and tokenizes the prompt (its
    `generate` is intercepted to capture the ids), the real `InternVLChatModel.generate` merges the image features
    into the embeddings (the language model's `generate` is intercepted to capture them), and the language model's
    own forward gives the logits at the last position: what the first step of generation reads."""
    seen: dict = {}

    def language_model_generate(inputs_embeds=None, attention_mask=None, **kwargs):
        seen["embeds"], seen["mask"] = inputs_embeds, attention_mask
        return torch.zeros(1, 0, dtype=torch.long)  # no answer: chat decodes ""

    def model_generate(**kwargs):
        seen["ids"] = kwargs["input_ids"]
        return type(model).generate(model, **kwargs)  # the real embedding merge

    model.generate, model.language_model.generate = model_generate, language_model_generate
    try:
        model.chat(tokenizer, pixels, question, {"max_new_tokens": 1, "do_sample": False})
    finally:
        del model.generate, model.language_model.generate
    logits = model.language_model(inputs_embeds=seen["embeds"], attention_mask=seen["mask"]).logits[0, -1].float()
    return float(torch.softmax(logits[[yes_id, no_id]], dim=-1)[0]), seen["ids"][0].tolist()


@dataclass(frozen=True)
class Comparison:
    """The command's scorer against the real code on one image: P(yes) of both, and whether every prompt matched."""

    scores: list[float]
    reference: list[float]
    prompts_equal: bool
    prefix_mode: str  # what the scorer ran (packed falls back to expanded only if its check fails)
    n_tiles: int

    @property
    def max_abs_difference(self) -> float:
        return max(abs(a - b) for a, b in zip(self.scores, self.reference))


def compare_with_reference(parts, reference, image, questions: list[str], max_tiles: int, mode: str,
                           batch_size: int = 3) -> Comparison:  # fmt: skip
    """Score `questions` about `image` with the command's InternVLScorer on `parts` and with the real code
    (`reference` = (model, tokenizer) from `reference_model`), on the same tiles."""
    from makd.mllm.inprocess_scorer import InternVLScorer

    scorer = InternVLScorer(parts, max_tiles=max_tiles, batch_size=batch_size, prefix_mode=mode)
    tiles = scorer.prepare(image)
    scores = scorer.score([tiles], questions)[0]
    model, tokenizer = reference
    pixels = scorer.pixels(tiles).to(next(model.parameters()).dtype)
    expected, equal = [], True
    for question, ids in zip(questions, scorer.prompt_ids(questions, tiles.shape[0])):
        p_yes, real_ids = chat_p_yes(model, tokenizer, pixels, question, scorer.tokens.yes_id, scorer.tokens.no_id)
        expected.append(p_yes)
        equal = equal and real_ids == list(ids)
    return Comparison([float(s) for s in scores], expected, equal, scorer.prefix_mode, int(tiles.shape[0]))
