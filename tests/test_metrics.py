"""Metrics and evaluation: class logits only, every sample counted, aspect agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from makd.engine.distributed import DistInfo
from makd.engine.evaluate import ContiguousShardSampler, evaluate, make_eval_loader
from makd.engine.metrics import MIN_AUC_COUNT, aspect_agreement, binary_auc, counted_auc, topk_correct


def test_topk_correct_hand_values():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk_correct(logits, labels, (1, 2, 5)) == [1, 2, 3]


def test_binary_auc_hand_values():
    assert binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert binary_auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)  # tie counts half
    assert binary_auc(np.array([1.0, 2.0]), np.array([0, 1])) == 1.0
    assert np.isnan(binary_auc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_aspect_agreement():
    teacher = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.6]])
    predicted = np.array([[0.8, 0.3], [0.2, 0.7], [0.6, 0.4]])
    result = aspect_agreement(predicted, teacher, min_count=1)
    assert result["aspect_mae"] == pytest.approx(np.abs(predicted - teacher).mean())
    # aspect 0: positives {0, 2} scores .8,.6 vs negative .2 -> 1.0; aspect 1: positives {1, 2} .7,.4 vs .3 -> 1.0
    assert result["aspect_auc"] == pytest.approx(1.0) and result["aspect_auc_questions"] == 2
    # By default an AUC needs MIN_AUC_COUNT (10) yes and 10 no answers: none of these 3-image aspects has one.
    default = aspect_agreement(predicted, teacher)
    assert math.isnan(default["aspect_auc"]) and default["aspect_auc_questions"] == 0


def test_an_auc_is_computed_only_from_enough_answers_on_each_side():
    rng = np.random.default_rng(0)
    scores = rng.random(40)
    positives = np.zeros(40, dtype=bool)
    positives[:9] = True  # 9 yes, 31 no: below MIN_AUC_COUNT on the yes side
    auc, n_pos, n_neg = counted_auc(scores, positives)
    assert MIN_AUC_COUNT == 10 and math.isnan(auc) and (n_pos, n_neg) == (9, 31)
    positives[9] = True
    auc, n_pos, n_neg = counted_auc(scores, positives)
    assert auc == pytest.approx(binary_auc(scores, positives)) and (n_pos, n_neg) == (10, 30)
    # The mean over aspects leaves out those below the minimum: aspect 1 (3 yes) would pull the mean to 0.5.
    teacher = np.stack([positives.astype(float), (np.arange(40) < 3).astype(float)], axis=1)
    predicted = np.stack([positives * 0.9 + 0.05, 1.0 - (np.arange(40) < 3) * 0.99], axis=1)
    result = aspect_agreement(predicted, teacher)
    assert result["aspect_auc"] == pytest.approx(1.0) and result["aspect_auc_questions"] == 1


class FixedOutputs(Dataset):
    """Sample i: input = its index; labels cycle over 3 classes; teacher aspects known."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.tensor([float(i)]), "label": i % 3, "aspects": torch.tensor([1.0 if i % 2 else 0.0])}


class CheatingAspectStudent(torch.nn.Module):
    """Class logits are right on every even sample; its aspect output is huge, so an argmax over
    all C + Q outputs (the official code's defect) would always pick the aspect unit."""

    def forward(self, x):
        i = x[:, 0].long()
        class_logits = torch.nn.functional.one_hot(torch.where(i % 2 == 0, i % 3, (i + 1) % 3), 3).float()
        aspect = torch.where(i % 2 == 1, 3.0, 2.0).unsqueeze(1).float()
        return torch.cat([class_logits, aspect], dim=1)


def test_evaluate_scores_class_logits_only_and_counts_every_sample():
    dataset = FixedOutputs(41)  # not a multiple of the batch size: the last batch must count
    loader = make_eval_loader(dataset, batch_size=4, num_workers=0, info=DistInfo(), pin_memory=False)
    result = evaluate(CheatingAspectStudent(), loader, num_classes=3, device=torch.device("cpu"))
    assert result["num_samples"] == 41
    assert result["top1"] == pytest.approx(100 * 21 / 41)  # even indices 0..40
    assert result["top5"] == pytest.approx(100.0)  # k is capped at C = 3
    assert result["aspect_auc"] == pytest.approx(1.0)


class ModeRecordingStudent(CheatingAspectStudent):
    """Records whether each forward ran under torch.inference_mode."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(torch.is_inference_mode_enabled())
        return super().forward(x)


def test_evaluate_runs_under_inference_mode_and_any_batch_size_gives_the_same_numbers():
    student = ModeRecordingStudent()
    results = []
    for batch_size in (3, 64):  # a larger evaluation batch changes nothing but speed
        loader = make_eval_loader(
            FixedOutputs(11), batch_size=batch_size, num_workers=0, info=DistInfo(), pin_memory=False
        )
        results.append(evaluate(student, loader, num_classes=3, device=torch.device("cpu")))
    assert student.modes == [True] * 5  # 4 batches of 3, then 1 of 64
    assert results[0] == pytest.approx(results[1], nan_ok=True)  # (11 samples: too few for an aspect AUC, NaN)
    assert not torch.is_inference_mode_enabled()  # left as it was


def test_shard_sampler_covers_each_index_once():
    shards = [list(ContiguousShardSampler(10, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))
