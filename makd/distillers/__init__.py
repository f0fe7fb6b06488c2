"""Distillers by name: each returns (class_logits, {loss_name: tensor}) from forward_train."""

from __future__ import annotations

from makd.distillers.base import Distiller
from makd.distillers.ce import CrossEntropyBaseline
from makd.distillers.makd import MultiAspectDistiller
from makd.registry import Registry

DISTILLERS: Registry = Registry("distiller")


@DISTILLERS.register("NONE", "CE")
def _build_baseline(cfg, student, num_classes: int, num_aspects: int) -> Distiller:
    return CrossEntropyBaseline(student, num_classes, ce_weight=cfg.MaKD.CE_WEIGHT)


@DISTILLERS.register("MaKD")
def _build_makd(cfg, student, num_classes: int, num_aspects: int) -> Distiller:
    return MultiAspectDistiller(
        student, num_classes, num_aspects, cfg.MaKD.CE_WEIGHT, cfg.MaKD.ALPHA, cfg.MaKD.TEMPERATURE
    )


def build_distiller(cfg, student, num_classes: int, num_aspects: int) -> Distiller:
    return DISTILLERS.get(cfg.DISTILLER.TYPE)(cfg, student, num_classes, num_aspects)


__all__ = ["DISTILLERS", "Distiller", "build_distiller"]
