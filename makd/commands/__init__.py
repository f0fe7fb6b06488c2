"""The command bodies behind tools/ and InternVL_logits/: each `main(argv) -> exit code`, one module per command."""
