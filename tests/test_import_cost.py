"""Start-up cost: a CIFAR / torchvision student run imports neither timm nor transformers (issue 12, item 4).

timm adds ~0.4-1 s and transformers several seconds to every start-up; only a timm student and stage 2 need them.
The check runs in a fresh interpreter, since this test process may have imported both already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
heavy = ("timm", "transformers")
seen = {}
import makd.engine.trainer
seen["trainer"] = [m for m in heavy if m in sys.modules]
from makd.models import build_student
from makd.models.names import resolve_student_name
build_student("resnet20", 103, input_family="cifar")
resolve_student_name("resnet18", "imagenet")  # a torchvision student
seen["cifar and torchvision students"] = [m for m in heavy if m in sys.modules]
import makd.mllm.extraction, makd.mllm.inprocess_scorer, makd.commands.stage2
seen["stage 2 modules"] = [m for m in heavy if m in sys.modules]
resolve_student_name("timm:resnet18")
seen["timm student named"] = [m for m in heavy if m in sys.modules]
print(json.dumps(seen))
"""


def test_local_and_torchvision_students_import_neither_timm_nor_transformers():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["trainer"] == []
    assert seen["cifar and torchvision students"] == []
    assert seen["stage 2 modules"] == []  # transformers loads with the model, not with the modules
    assert seen["timm student named"] == ["timm"]  # the probe sees an import when one happens
