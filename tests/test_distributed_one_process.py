"""torchrun with one process joins a process group of one, so one device runs the code path of many (the group,
DDP, the reductions of evaluation), and the result is that of a plain run, bit for bit (DDP over one process sums
one gradient). tests/test_cuda_training.py runs the same on a GPU with NCCL."""

from __future__ import annotations

import json

import torch
from tool_modules import run_tool, run_under_torchrun

FAST = ["DATASET.IMAGE_SIZE", "32", "DATASET.RESIZE_RATIO", "1.0", "SOLVER.EPOCHS", "2", "NUM_THREADS", "1"]
METRICS = ("test_top1_last", "test_top1_best", "best_epoch", "test_top5_last")


def test_one_process_under_torchrun_joins_a_group_and_equals_a_plain_run(release_dataset):
    config, root = release_dataset["config"], release_dataset["root"]
    plain = run_tool("our_train", [config, *FAST, "OUTPUT_DIR", root / "plain"], timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    group = run_under_torchrun("our_train", [config, *FAST, "OUTPUT_DIR", root / "group"], timeout=300, processes=1)
    assert group.returncode == 0, group.stderr[-2000:]
    assert "cpu x1 (gloo)" in group.stdout and "x1 (" not in plain.stdout  # a gloo group of one, DDP-wrapped
    summaries = [json.loads((root / name / "summary.json").read_text()) for name in ("plain", "group")]
    assert [s["world_size"] for s in summaries] == [1, 1]
    assert {k: summaries[0][k] for k in METRICS} == {k: summaries[1][k] for k in METRICS}
    a, b = (torch.load(root / name / "student.pth", weights_only=False)["model"] for name in ("plain", "group"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_plain_run_with_rank_variables_but_no_rendezvous_stays_alone(monkeypatch):
    """RANK / WORLD_SIZE of 1 without MASTER_ADDR (set by a job script, not by a launcher) start no group."""
    from makd.engine.distributed import DistInfo, init_distributed

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert init_distributed("cpu") == DistInfo() and not DistInfo().enabled
