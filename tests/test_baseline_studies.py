"""The two GPU reproduction studies load, name every method of the family, and resolve each condition's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from makd.analysis.study import load_study, resolved_config

REPO = Path(__file__).resolve().parents[1]
FAMILY = {
    "NONE",
    "KD",
    "DKD",
    "MLKD",
    "FITNET",
    "AT",
    "SP",
    "VID",
    "RKD",
    "PKT",
    "NST",
    "OFD",
    "CRD",
    "REVIEWKD",
    "MaKD",
}


@pytest.mark.parametrize(
    "name,student,kdsvd", [("cifar100_baselines", "resnet8x4", True), ("cub200_baselines", "ResNet18", False)]
)
def test_the_reproduction_studies_cover_the_family_and_resolve(monkeypatch, name, student, kdsvd):
    monkeypatch.chdir(REPO)  # study files name repository paths
    study = load_study(REPO / "configs" / "studies" / f"{name}.yaml")
    assert study.seeds == [0, 1, 2]
    runs = {run.condition: run for run in study.runs() if run.seed == 0}
    configs = {condition: resolved_config(run) for condition, run in runs.items()}
    types = {c["DISTILLER.TYPE"] for c in configs.values()}
    assert FAMILY <= types and ("KDSVD" in types) is kdsvd
    combined = {t for t in types if t.startswith("MaKD_")}
    assert {f"MaKD_{t}" for t in FAMILY - {"NONE", "MaKD"}} <= combined
    assert configs["kd_dot"]["SOLVER.TRAINER"] == "dot" and configs["kd"]["SOLVER.TRAINER"] != "dot"
    assert all(c["DISTILLER.STUDENT"] == student for c in configs.values())
