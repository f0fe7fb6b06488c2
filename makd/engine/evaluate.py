"""Evaluation on class logits only, over every sample (no dropped batches), shard-aware for DDP."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from makd.data.device_batch import prepare_batch
from makd.data.loader_settings import loader_settings
from makd.engine.distributed import DistInfo, all_gather_arrays, all_reduce_sum
from makd.engine.metrics import aspect_agreement, topk_correct
from makd.errors import raise_if_stopped


class ContiguousShardSampler(Sampler[int]):
    """Rank r of W takes a contiguous slice of the indices, without padding, so no sample is counted twice."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        per = -(-length // world_size)
        self.indices = list(range(min(length, rank * per), min(length, (rank + 1) * per)))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_eval_loader(
    dataset: Dataset, batch_size: int, num_workers: int, info: DistInfo, pin_memory: bool, collate_fn=None
) -> DataLoader:
    """Every sample of `dataset` once, this rank's contiguous share; `collate_fn` None = torch's default."""
    sampler = ContiguousShardSampler(len(dataset), info.rank, info.world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,
        collate_fn=collate_fn,
        **loader_settings(num_workers, pin_memory, persistent=False),  # evaluation is once per LOG.EVAL_FREQ
    )


# inference_mode rather than no_grad: no version counters or autograd bookkeeping on any tensor, and nothing kept
# for a backward pass, so the evaluation batch (DATASET.TEST.BATCH_SIZE) can be several times the training batch.
@torch.inference_mode()
def evaluate(
    student: torch.nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    info: DistInfo | None = None,
    confusion: bool = False,
) -> dict[str, float]:
    """Top-1/top-5 (%) and CE loss from the first `num_classes` outputs of `student` over the loader's split.

    When the split carries aspect targets (not NaN) and the student has aspect outputs, also the aspect
    head's agreement with the teacher (mean absolute error, AUC). With `confusion`, also "confusion": int64 numpy
    [C, C], row = true class, column = top-1 prediction. Results are summed over processes.
    """
    info = info or DistInfo()
    was_training = student.training
    student.eval()
    correct1 = correct5 = loss_sum = count = 0.0
    predicted, teacher = [], []
    counts = torch.zeros(num_classes * num_classes, dtype=torch.float64, device=device) if confusion else None
    for batch in loader:
        raise_if_stopped()  # Ctrl-C / SIGTERM between batches (makd.errors)
        aspects = batch["aspects"]  # compared on the CPU
        batch = prepare_batch(batch, loader.dataset, device)
        images, labels = batch["image"], batch["label"]
        outputs = student(images).float()  # [B, C (+ Q)]
        class_logits = outputs[:, :num_classes]
        c1, c5 = topk_correct(class_logits, labels, (1, 5))
        correct1, correct5 = correct1 + c1, correct5 + c5
        loss_sum += float(F.cross_entropy(class_logits, labels, reduction="sum"))
        count += labels.numel()
        if counts is not None:  # cell (true, predicted) of each image, counted in one bincount
            cells = labels * num_classes + class_logits.argmax(dim=1)
            counts += torch.bincount(cells, minlength=num_classes * num_classes).to(counts.dtype)
        if outputs.shape[1] > num_classes and aspects.numel() and outputs.shape[1] - num_classes == aspects.shape[1]:
            rows = torch.isfinite(aspects).all(dim=1)
            if rows.any():
                predicted.append(torch.sigmoid(outputs[:, num_classes:][rows.to(device)]).cpu().numpy())
                teacher.append(aspects[rows].numpy())
    student.train(was_training)
    correct1, correct5, loss_sum, count = all_reduce_sum([correct1, correct5, loss_sum, count], device)
    expected = len(loader.dataset)
    if int(count) != expected:
        warnings.warn(f"evaluated {int(count)} samples but the split holds {expected}", stacklevel=2)
    result = {
        "top1": 100.0 * correct1 / max(count, 1),
        "top5": 100.0 * correct5 / max(count, 1),
        "loss": loss_sum / max(count, 1),
        "num_samples": int(count),
    }
    if counts is not None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)  # each process counted its own share of the split
        result["confusion"] = counts.round().long().cpu().numpy().reshape(num_classes, num_classes)
    gathered = all_gather_arrays((predicted, teacher), info)
    all_pred = [a for p, _ in gathered for a in p]
    all_teacher = [a for _, t in gathered for a in t]
    if all_pred:
        result.update(aspect_agreement(np.concatenate(all_pred), np.concatenate(all_teacher)))
    return result
