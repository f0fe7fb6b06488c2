"""Distillers by name. Every module of this package is imported here, so each registers itself in DISTILLERS.

Adding a method is one new module (a registered Distiller subclass) plus its tests; nothing else lists methods. A
method that declares `combines_with_aspects` also gets "MaKD_<name>" (makd.distillers.aspect_combination).
"""

from __future__ import annotations

import importlib
import pkgutil

from makd.distillers.aspect_combination import register_aspect_combinations
from makd.distillers.base import DISTILLERS, Distiller
from makd.registry import UnknownNameError

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
register_aspect_combinations()  # MaKD_<X> for every method X that combines with MaKD's aspect term


def distiller_classes() -> list[type[Distiller]]:
    """Every registered method once (aliases collapsed), ordered by registered name."""
    return list(dict.fromkeys(DISTILLERS.get(name) for name in DISTILLERS.names()))


def distiller_class(name: str) -> type[Distiller]:
    """The registered class of DISTILLER.TYPE `name`; unknown -> UnknownNameError listing the methods."""
    if name not in DISTILLERS:
        raise UnknownNameError(
            f"DISTILLER.TYPE {name!r} is unknown; use one of {', '.join(cls.name for cls in distiller_classes())}"
        )
    return DISTILLERS.get(name)


def build_distiller(
    cfg, student, num_classes: int, num_aspects: int, teacher=None, class_names=None, train_labels=None
) -> Distiller:
    """The configured method around `student` (head already C or C + Q wide) and the optional frozen teacher.

    Methods that train on per-class targets (needs_class_targets) also get the dataset's class names, in label
    order, to match the rows of their class-level file; methods that keep state per training image
    (needs_train_labels: CRD's memory bank) get the training split's labels in index order (batch["index"])."""
    method = distiller_class(cfg.DISTILLER.TYPE)
    extra = {}
    if method.needs_class_targets:
        extra["class_names"] = class_names
    if method.needs_train_labels:
        if train_labels is None:
            raise ValueError(f"DISTILLER.TYPE {method.name} needs the training labels (build_distiller's train_labels)")
        extra["train_labels"] = list(train_labels)
    distiller = method.from_config(cfg, student, num_classes, num_aspects, teacher, **extra)
    # the weights the epoch line shows beside each term (Distiller.loss_weights)
    keys = distiller.loss_weight_keys
    distiller.loss_weight_values = {name: float(config_value(cfg, key)) for name, key in keys.items()}
    return distiller


def config_value(cfg, key: str):
    """The value of a dotted config key ("MaKD.ALPHA") in a config tree."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


__all__ = ["DISTILLERS", "Distiller", "build_distiller", "distiller_class", "distiller_classes"]
