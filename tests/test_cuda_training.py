"""CUDA variants of the trainer's device-dependent paths; skipped without a CUDA device. `tools/gpu_check.py` runs
them (`pytest -m cuda`) and reports the figures they record (`record_property`).

Covered: mixed precision in bfloat16 and in float16 with its loss scaler, exact `--resume` under DETERMINISTIC
(which needs CUBLAS_WORKSPACE_CONFIG and no cuDNN benchmarking: makd.engine.reproducibility), uint8 batches through
pinned memory and non-blocking copies, channels_last, SOLVER.COMPILE, and a one-process NCCL group (DDP) giving
the weights of a plain run, and the confusion matrix of evaluation counted on the device.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import pytest
import torch
from tool_modules import load_tool, run_tool, run_under_torchrun

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

FAST = ["DATASET.IMAGE_SIZE", "32", "DATASET.RESIZE_RATIO", "1.0", "DEVICE", "cuda"]
METRICS = ("test_top1_last", "test_top1_best", "best_epoch", "test_top5_last")
CUDA = torch.device("cuda")

our_train = load_tool("our_train")


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def weights_of(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "student.pth", weights_only=False, map_location="cpu")["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train_in_process(release_dataset, name: str, *opts: str) -> Path:
    out = release_dataset["root"] / name
    assert our_train.main([str(release_dataset["config"]), *FAST, *opts, "OUTPUT_DIR", str(out)]) == 0
    return out


def test_bfloat16_autocast_trains_with_float32_weights_and_no_scaler(release_dataset, record_property):
    from makd.config import load_cfg
    from makd.engine.trainer import MixedPrecision, amp_dtype
    from makd.models import build_student

    cfg = load_cfg(str(release_dataset["config"]), ["SOLVER.AMP", "True", "SOLVER.AMP_DTYPE", "bfloat16"])
    amp = MixedPrecision(cfg, CUDA)
    student = build_student("resnet8x4", 8, input_family="cifar").to(CUDA)
    with amp.autocast():
        assert student(torch.randn(4, 3, 32, 32, device=CUDA)).dtype == torch.bfloat16
    assert not amp.scaler.is_enabled()
    record_property("auto_amp_dtype", str(amp_dtype("auto")))  # bfloat16 on Ampere and later
    out = train_in_process(release_dataset, "bf16", "SOLVER.AMP", "True", "SOLVER.AMP_DTYPE", "bfloat16",
                           "SOLVER.EPOCHS", "2")  # fmt: skip
    summary = summary_of(out)
    assert 0.0 <= summary["test_top1_last"] <= 100.0
    assert all(v.dtype == torch.float32 for v in weights_of(out).values() if v.is_floating_point())
    assert torch.load(out / "latest.pth", weights_only=False)["scaler"] == {}  # bfloat16 needs no loss scaling


def test_float16_autocast_runs_its_loss_scaler_into_the_checkpoint(release_dataset, record_property):
    out = train_in_process(release_dataset, "fp16", "SOLVER.AMP", "True", "SOLVER.AMP_DTYPE", "float16",
                           "SOLVER.EPOCHS", "2")  # fmt: skip
    scaler = torch.load(out / "latest.pth", weights_only=False)["scaler"]
    record_property("fp16_loss_scale", float(scaler["scale"]))
    assert 0 < float(scaler["scale"]) <= 65536.0 and scaler["_growth_tracker"] >= 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows)


@pytest.fixture(scope="module")
def deterministic_runs(tmp_path_factory):
    """One unbroken DETERMINISTIC float16 run with 2 loader workers, in a fresh process as a user runs it; shared by
    the resume and the NCCL tests (both must give its weights)."""
    from conftest import write_aspects_for, write_release_split

    root = tmp_path_factory.mktemp("deterministic")
    classes = ["Abyssinian", "american_bulldog", "Bengal"]
    ids = write_release_split(root / "train", classes, per_class=8, seed=0)
    write_release_split(root / "test", classes, per_class=4, seed=1)
    write_aspects_for(root / "aspects.json", ids, num_aspects=5, seed=2)
    args = [*FAST, "DATASET.NUM_CLASS", "3", "DATASET.ASPECT_JSON", root / "aspects.json",
            "DATASET.TRAIN_IMAGE_PATH", root / "train", "DATASET.TEST_IMAGE_PATH", root / "test",
            "DATASET.NUM_WORKERS", "2", "DISTILLER.STUDENT", "resnet8x4", "SOLVER.BATCH_SIZE", "8",
            "SOLVER.EPOCHS", "3", "SOLVER.LR_DECAY_STAGES", "[2]", "DETERMINISTIC", "True",
            "SOLVER.AMP", "True", "SOLVER.AMP_DTYPE", "float16"]  # fmt: skip
    config = root / "config.yaml"
    config.write_text("DISTILLER:\n  TYPE: MaKD\n")
    unbroken = root / "unbroken"
    done = run_tool("our_train", [config, *args, "OUTPUT_DIR", unbroken], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "config": config, "args": args, "unbroken": unbroken}


def test_resume_on_cuda_reproduces_an_unbroken_run_exactly(deterministic_runs):
    runs = deterministic_runs
    broken = runs["root"] / "broken"
    first = run_tool("our_train", [runs["config"], *runs["args"], "OUTPUT_DIR", broken, "--stop-after-epoch", "1"],
                     timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (broken / "summary.json").exists()
    rest = run_tool("our_train", [runs["config"], "--resume", *runs["args"], "OUTPUT_DIR", broken], timeout=300)
    assert rest.returncode == 0, rest.stderr[-3000:]
    unbroken = summary_of(runs["unbroken"])
    assert {k: summary_of(broken)[k] for k in METRICS} == {k: unbroken[k] for k in METRICS}
    assert same_weights(weights_of(broken), weights_of(runs["unbroken"]))


def test_one_process_nccl_group_gives_the_weights_of_a_plain_run(deterministic_runs):
    runs = deterministic_runs
    out = runs["root"] / "nccl"
    done = run_under_torchrun("our_train", [runs["config"], *runs["args"], "OUTPUT_DIR", out], timeout=300,
                              processes=1)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x1 (nccl)" in done.stdout  # a group of one over NCCL, the student wrapped in DDP
    assert {k: summary_of(out)[k] for k in METRICS} == {k: summary_of(runs["unbroken"])[k] for k in METRICS}
    assert same_weights(weights_of(out), weights_of(runs["unbroken"]))


def test_uint8_batches_cross_pinned_memory_to_the_gpu_unchanged(release_dataset, record_property):
    from makd.config import load_cfg
    from makd.data.build import build_data
    from makd.data.device_batch import prepare_batch
    from makd.engine.distributed import DistInfo
    from makd.engine.trainer import make_train_loader

    cfg = load_cfg(str(release_dataset["config"]), [*FAST, "DATASET.NUM_WORKERS", "2", "SOLVER.BATCH_SIZE", "6"])
    data = build_data(cfg)
    loader, _ = make_train_loader(data.train, cfg, DistInfo(), pin_memory=True)
    batches = list(loader)
    assert batches and all(b["image"].dtype == torch.uint8 and b["image"].is_pinned() for b in batches)
    # Every copy is queued before any result is read: non-blocking copies overlapping with the conversions.
    on_gpu = [prepare_batch(dict(b), data.train, CUDA) for b in batches]
    torch.cuda.synchronize()
    worst = 0.0
    for batch, moved in zip(batches, on_gpu):
        expected = prepare_batch(dict(batch), data.train, torch.device("cpu"))
        assert moved["image"].device.type == "cuda" and moved["image"].dtype == torch.float32
        worst = max(worst, float((moved["image"].cpu() - expected["image"]).abs().max()))
        assert torch.equal(moved["label"].cpu(), expected["label"])
        assert torch.equal(moved["aspects"].cpu(), expected["aspects"])
    record_property("max_abs_difference_gpu_vs_cpu_normalisation", worst)
    assert worst <= 1e-6


def test_channels_last_on_cuda_matches_contiguous_and_trains(release_dataset, record_property):
    from makd.models import build_student

    torch.backends.cudnn.allow_tf32, previous = False, torch.backends.cudnn.allow_tf32
    try:
        torch.manual_seed(0)
        student = build_student("resnet18", 10, input_family="imagenet").to(CUDA).eval()
        images = torch.randn(8, 3, 64, 64, device=CUDA)
        with torch.no_grad():
            plain = student(images)
            student.to(memory_format=torch.channels_last)
            last = student(images.contiguous(memory_format=torch.channels_last))
    finally:
        torch.backends.cudnn.allow_tf32 = previous
    difference = float((plain - last).abs().max())
    record_property("max_abs_logit_difference_channels_last_fp32", difference)
    assert difference <= 1e-4
    out = train_in_process(release_dataset, "channels_last", "DATASET.CHANNELS_LAST", "True", "SOLVER.AMP", "True",
                           "SOLVER.EPOCHS", "2")  # fmt: skip
    convs = [w for w in weights_of(out).values() if w.ndim == 4]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


def test_compiled_student_trains_and_keeps_its_checkpoint_keys(release_dataset, record_property):
    from makd.models import build_student

    started = time.perf_counter()
    out = train_in_process(release_dataset, "compiled", "SOLVER.COMPILE", "True", "SOLVER.AMP", "True",
                           "SOLVER.EPOCHS", "2")  # fmt: skip
    record_property("compiled_run_seconds", round(time.perf_counter() - started, 1))
    eager_keys = set(build_student("resnet8x4", 3 + 5, input_family="cifar").state_dict())
    assert set(weights_of(out)) == eager_keys  # no "_orig_mod." prefix: eval.py and resume read it as any other
    summary = summary_of(out)
    best = summary["best_epoch"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluated = load_tool("eval")
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        assert evaluated.main([str(release_dataset["config"]), str(out / "best.pth"), *FAST]) == 0
    result = json.loads(captured.getvalue())
    # the eager student on the saved weights: the compiled run's test top-1 within one of its 12 images
    assert result["num_samples"] == 12 and abs(result["top1"] - rows[best - 1]["test_top1"]) <= 100 / 12 + 1e-6


def test_the_confusion_matrix_is_counted_on_the_device(record_property):
    """evaluate(confusion=True) counts with one bincount per batch on the device: the hand-made set of
    tests/test_class_accuracy.py gives the same matrix on CUDA as on the CPU."""
    from test_class_accuracy import EXPECTED, ChosenPredictions

    from makd.engine.distributed import DistInfo
    from makd.engine.evaluate import evaluate, make_eval_loader

    loader = make_eval_loader(ChosenPredictions(), 4, 0, DistInfo(), True)
    result = evaluate(torch.nn.Identity().to(CUDA), loader, 3, CUDA, confusion=True)
    assert result["confusion"].tolist() == EXPECTED
    record_property("cuda_confusion_matrix", result["confusion"].tolist())
