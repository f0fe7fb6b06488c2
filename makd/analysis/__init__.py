"""From runs to a verdict: studies over seeds and controls, tables with confidence intervals, per-aspect
metrics and plots. Nothing here trains by itself: studies call tools/our_train.py as subprocesses."""
