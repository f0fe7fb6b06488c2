"""Synthetic data sets and tiny stand-in models: for the demo, the benchmarks and the tests, never the library.

Data sets (each writes images, questions, an aspect file with its sidecar and the true answers): `classification`
(the main demo: classes of shapes and textures), `oriented` (asymmetric objects, for the flip and crop policies),
`detection` (COCO instances and per-box rows), `class_teacher` (a per-class teacher file from the main demo),
`photos` (photo-like class folders of varied sizes, no teacher: for the quickstart).
Models (random weights, built on the spot, no downloads): `tiny_internvl` (InternVL checkpoints: transformers'
native classes from makd.mllm.tiny_teacher, or `tiny_remote_code`, a stand-in of the remote code),
`internvl_remote_code` (checkpoints on the real remote code of the OpenGVLab/InternVL repository, from a local
mirror), `tiny_causal_lm` (a chat causal LM, also from makd.mllm.tiny_teacher).
"""
