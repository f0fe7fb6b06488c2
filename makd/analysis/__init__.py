"""From runs to a verdict: studies over seeds and controls, tables with confidence intervals, per-aspect
metrics and plots, and the inspection and audit of aspect files. Nothing here trains by itself: studies call
tools/our_train.py as subprocesses."""
