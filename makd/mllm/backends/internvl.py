"""In-process InternVL (`--backend auto | hf | remote`): the model loaded by makd.mllm.model_loading (transformers'
native classes, or the remote code; auto: detected from the model's config.json), scored by
makd.mllm.inprocess_scorer.InternVLScorer. Its options are the command's model options (--revision, --max-tiles,
--dtype, --device, --attn-implementation, --batch-size, --prefix-mode), some of which the class level shares."""

from __future__ import annotations

import argparse

from makd.mllm.scorer import BACKENDS, Scorer


@BACKENDS.register("auto", "hf", "remote")
class InProcessInternVL:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """None of its own: it reads the command's model options."""

    @staticmethod
    def build(args: argparse.Namespace, name: str, answer_suffix: str) -> Scorer:
        # Imported here: loading a model needs torch, which a server backend does not.
        from makd.mllm.inprocess_scorer import InternVLScorer
        from makd.mllm.model_loading import load_internvl

        parts = load_internvl(
            args.model,
            backend=name,
            device=args.device,
            dtype=args.dtype,
            revision=args.revision,
            attn_implementation=args.attn_implementation,
        )
        return InternVLScorer(
            parts,
            max_tiles=args.max_tiles,
            batch_size=args.batch_size,
            system_message=args.system_prompt,
            answer_suffix=answer_suffix,
            yes_word=args.yes_word,
            no_word=args.no_word,
            prefix_mode=args.prefix_mode,
        )
