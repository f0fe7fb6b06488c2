"""Training loop, evaluation, checkpoints, logging and multi-process setup."""
