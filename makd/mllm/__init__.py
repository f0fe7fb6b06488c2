"""Stage 2: a multimodal LLM answers every yes/no question about every image; P(yes) becomes an aspect target.

Modules: `chat_template` (the InternVL2.5 prompt), `tiling` (InternVL dynamic tiling), `yes_no` (Yes/No token
resolution and P(yes)), `model_loading` (native and remote-code InternVL as `InternVLParts`), `prefix_scoring`
(shared-prefix scoring), `scorer` (the backend contract and registry), `inprocess_scorer` / `openai_scorer` (the
scorers), `backends` (one module per `--backend`), `reference` (the official one-pass-per-question approach, kept
to test and benchmark against), `items` / `box_items` (what is scored: images, or the boxes of a COCO set),
`partial_rows`, `extraction` (the loop), `merge` (shards), `class_level` and `class_prompts` (questions about class
names), `tiny_teacher` (the tiny random offline teacher of `--model tiny`). The command is makd/commands/stage2.py;
the tests' remote-code stand-in is in makd/demo/.
"""
