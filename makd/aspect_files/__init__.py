"""Aspect files written anywhere (this project, LaViD, hand-made): read tolerantly, inspect, convert, audit.

`reading` parses a JSON object or JSON-lines file into (key, value) pairs without stopping at the first
problem; `inspect` summarises one file; `convert` maps another project's keys to this project's image
ids (or spreads per-class rows to images) and writes a validated aspect file; `audit` scores the
teacher's answers against ground-truth 0/1 attributes. The command is tools/aspects.py; see
docs/aspect_files.md.
"""
