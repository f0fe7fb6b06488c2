"""Stage 2: a multimodal LLM answers every yes/no question about every image; P(yes) becomes an aspect target.

Modules: `chat_template` (the InternVL2.5 prompt), `tiling` (InternVL dynamic tiling), `yes_no` (Yes/No token
resolution and P(yes)), `model_loading` (native and remote-code InternVL as `InternVLParts`), `prefix_scoring`
(shared-prefix scoring), `scorer` (the backend contract), `inprocess_scorer` / `openai_scorer` (the backends),
`reference` (the official one-pass-per-question approach, kept to test and benchmark against), `partial_rows`,
`extraction` (the loop), `merge` (shards), `cli` (the commands), and, for tests and the benchmark only, `tiny`
and `tiny_remote_code` (tiny random checkpoints).
"""
