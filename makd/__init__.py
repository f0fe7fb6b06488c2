"""makd: multi-aspect knowledge distillation (questions -> MLLM yes/no targets -> student training)."""

__version__ = "0.1.0"
