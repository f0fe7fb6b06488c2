"""LaViD (arXiv 2606.27527): CE on the class logits + lambda x MSE of an auxiliary head to the class's LLM targets.

The teacher is text-only and per class: a file `{class name: [p_1..p_Q]}` or `{class name: [[p_q1..p_qM], ...]}`
(multiple-choice distributions, flattened row-major to K = sum(M_q) targets), such as LaViD's published
`*_text.json` / `*_chat_50-5.json` files or `make_makd_logits_json.py --level class`. Its rows are matched to the
dataset's class names once, at construction (the one class_key rule of makd.formats.conversion: case folded, `_` as
space, a leading `NNN.` and a final "s" ignored; LaViD.CLASS_MAP pairs the rest), into a [C, K] table; an image's
target is its label's row, so no per-image aspect rows are needed.

The auxiliary head is a Linear on the pooled features (the input of the student's classifier, found as in
makd.models.heads) with K outputs; the class head stays C wide. loss_ce = CE_WEIGHT x CE(logits, y),
loss_lavid = LAMBDA x mean over batch and K of (aux(f(x)) - T_y)^2. The head is trainable state of the
distiller (saved in checkpoints, so --resume keeps it); the table is re-read from the file on every start.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from yacs.config import CfgNode as CN

from makd.distillers.base import DISTILLERS, Distiller
from makd.distillers.losses import class_cross_entropy
from makd.errors import ConfigError
from makd.formats.conversion import read_class_map
from makd.formats.target_sources import CLASS_KINDS, open_source
from makd.models.heads import classifier_layer


def add_lavid_config(cfg: CN) -> None:
    """The LaViD.* group; idempotent."""
    if "LaViD" in cfg:
        return
    cfg.LaViD = CN()
    # The per-class target file: {class name: [p_1..p_Q]} or multiple-choice {class name: [[p_q1..p_qM], ...]}.
    cfg.LaViD.CLASS_TARGETS = ""
    # Optional map of dataset class -> file class (JSON object, or lines `dataset class<TAB>file class`).
    cfg.LaViD.CLASS_MAP = ""
    # lambda, the MSE weight. LaViD's ResNet18 values: CUB 40, Caltech 20, Flowers 50, Aircraft 50, Pets 50, Cars 40,
    # set for its K = 250 targets (50 x 5) at lr 0.01 and batch 16. The largest lambda that trains scales with K / lr
    # (the MSE is a mean over K): about 140 there, 7.7 for the demo's K = 16 at lr 0.05 (docs/health.md).
    cfg.LaViD.LAMBDA = 50.0
    cfg.LaViD.CE_WEIGHT = 1.0  # weight of the class cross-entropy


def check_lavid_config(cfg: CN) -> None:
    for key in ("LAMBDA", "CE_WEIGHT"):
        if cfg.LaViD[key] < 0:
            raise ConfigError(f"LaViD.{key} must be >= 0, got {cfg.LaViD[key]}")


def class_target_table(
    path: str | os.PathLike, class_names: list[str], class_map_path: str | os.PathLike = ""
) -> tuple[torch.Tensor, dict]:
    """(table float32 [C, K], info) with row c = the file's row of dataset class `class_names[c]`, flattened.

    A dataset class without a row is a one-line ArtifactError naming it; file rows no class uses are listed in info.
    The file is a per-class or multiple-choice target source (makd.formats.target_sources).
    """
    class_map = read_class_map(class_map_path) if class_map_path else None
    source = open_source(
        path,
        key="LaViD.CLASS_TARGETS",
        class_names=class_names,
        kinds=CLASS_KINDS,
        class_map=class_map,
        class_map_key="LaViD.CLASS_MAP",
    )
    table = torch.from_numpy(source.class_table(list(class_names)))
    return table, source.info


def lavid_table(cfg: CN, class_names) -> torch.Tensor:
    """The [C, K] table of LaViD.CLASS_TARGETS for the dataset's class names (label order)."""
    if class_names is None:
        raise ValueError("LaViD needs the dataset's class names (build_distiller passes them)")
    if not cfg.LaViD.CLASS_TARGETS:
        raise ConfigError("LaViD.CLASS_TARGETS is empty; give the per-class target file ({class: [p_1..p_K]})")
    if not os.path.isfile(cfg.LaViD.CLASS_TARGETS):
        raise ConfigError(f"LaViD.CLASS_TARGETS {cfg.LaViD.CLASS_TARGETS} does not exist")
    table, _ = class_target_table(cfg.LaViD.CLASS_TARGETS, list(class_names), cfg.LaViD.CLASS_MAP)
    return table


def aux_head_stability(pooled: torch.Tensor, lam: float, num_targets: int, lr: float, momentum: float) -> dict:
    """How close SGD on the auxiliary head's regression is to diverging, from a batch of pooled features [B, D].

    The MSE's curvature in the head's weights along their stiffest direction is lambda x 2/K x the largest eigenvalue
    of E[f f^T]; post-ReLU pooled features share a large common mean, so that eigenvalue is about D x mean(f)^2
    (resnet8x4 at init: 77, torchvision ResNet18 at 224 px: ~350). Heavy-ball SGD diverges on a quadratic once
    lr x curvature exceeds 2 (1 + momentum): the head's outputs then overshoot with growing amplitude, and the
    backbone answers by driving the features to 0, which kills the class logits too (docs/health.md). Returns the
    step `lr x curvature`, its limit, and the largest lambda below the limit at this lr.
    """
    features = pooled.detach().flatten(1).double()
    eigenvalue = float(torch.linalg.eigvalsh(features.T @ features / max(len(features), 1))[-1])
    per_lambda = lr * 2.0 / num_targets * eigenvalue
    limit = 2.0 * (1.0 + momentum)
    return {
        "aux_head_feature_eigenvalue": eigenvalue,
        "aux_head_step": lam * per_lambda,
        "aux_head_step_limit": limit,
        "largest_stable_lambda": limit / per_lambda if per_lambda > 0 else float("inf"),
    }


@DISTILLERS.register("LaViD")
class LaViDDistiller(Distiller):
    name = "LaViD"
    needs_class_targets = True
    loss_weight_keys = {"loss_ce": "LaViD.CE_WEIGHT", "loss_lavid": "LaViD.LAMBDA"}
    add_config = staticmethod(add_lavid_config)
    check_config = staticmethod(check_lavid_config)

    def __init__(
        self,
        student: nn.Module,
        num_classes: int,
        class_targets: torch.Tensor,
        lam: float,
        ce_weight: float = 1.0,
        teacher: nn.Module | None = None,
    ) -> None:
        super().__init__(student, num_classes, 0, teacher)
        if class_targets.ndim != 2 or class_targets.shape[0] != num_classes:
            raise ValueError(f"class_targets must be [C={num_classes}, K], got {list(class_targets.shape)}")
        self.lam, self.ce_weight = lam, ce_weight
        head = classifier_layer(student)
        # Read at every start, never from a checkpoint (persistent=False): the file is the source of truth.
        self.register_buffer("class_targets", class_targets.clone(), persistent=False)  # [C, K]
        self.aux_head = nn.Linear(head.in_features, class_targets.shape[1])
        self._pooled: list[torch.Tensor] = []
        head.register_forward_pre_hook(self._keep_pooled)

    def _keep_pooled(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._pooled[:] = [inputs[0]]  # the classifier's input [B, D]: the pooled features

    @classmethod
    def from_config(cls, cfg, student, num_classes: int, num_aspects: int, teacher=None, class_names=None):
        return cls(student, num_classes, lavid_table(cfg, class_names), cfg.LaViD.LAMBDA, cfg.LaViD.CE_WEIGHT)

    def first_step_notes(self, lr: float, momentum: float) -> dict:
        """For the training-health checks, after a training forward: aux_head_stability of its pooled features,
        and the weight key it bounds."""
        notes = aux_head_stability(self._pooled[0], self.lam, self.class_targets.shape[1], lr, momentum)
        return {**notes, "stable_below": {"LaViD.LAMBDA": notes["largest_stable_lambda"]}}

    def forward_train(self, batch):
        logits = self.student(batch["image"])  # [B, C]
        pooled = self._pooled[0].flatten(1)  # [B, D]
        predicted = self.aux_head(pooled).float()  # [B, K]
        targets = self.class_targets[batch.get("label_index", batch["label"])]  # [B, K]
        if "mix_index" in batch:  # a mixed image gets the mixed class targets, with its pixels' lambda
            lam = batch["mix_lambda"].to(targets.dtype)[:, None]
            targets = lam * targets + (1.0 - lam) * targets[batch["mix_index"]]
        return logits, {
            "loss_ce": self.ce_weight * class_cross_entropy(logits, batch["label"]),
            "loss_lavid": self.lam * torch.mean((predicted - targets) ** 2),
        }
