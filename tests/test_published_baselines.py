"""The published CIFAR-100 resnet32x4 -> resnet8x4 table beside the matching method's row (tools/report.py --paper)."""

from __future__ import annotations

from makd.analysis.published import method_key, published_for

PUBLISHED = {
    ("NONE", "base"): 72.50,
    ("KD", "base"): 73.33,
    ("KD", "dot"): 75.12,
    ("DKD", "base"): 76.32,
    ("FITNET", "base"): 73.50,
    ("AT", "base"): 73.44,
    ("SP", "base"): 72.94,
    ("VID", "base"): 73.09,
    ("RKD", "base"): 71.90,
    ("PKT", "base"): 73.64,
    ("NST", "base"): 73.30,
    ("CRD", "crd"): 75.51,
    ("OFD", "base"): 74.95,
    ("REVIEWKD", "base"): 75.63,
    ("MLKD", "base"): 77.08,
}


def _config(method: str, trainer: str = "base") -> dict:
    return {
        "DATASET.TYPE": "cifar100",
        "DISTILLER.STUDENT": "resnet8x4",
        "DISTILLER.TYPE": method,
        "SOLVER.TRAINER": trainer,
    }


def test_each_method_row_gets_its_own_published_figure():
    for (method, trainer), top1 in PUBLISHED.items():
        dataset, student, figures = published_for(_config(method, trainer))
        assert (dataset, student) == ("cifar100", "resnet8x4")
        assert [f.top1 for f in figures] == [top1], (method, trainer)
    assert published_for(_config("KDSVD"))[2] == []  # not published for this pair
    assert published_for(_config("MaKD_AT"))[2] == []
    assert method_key(_config("kd", "DOT")) == "KD+DOT" and method_key(_config("MaKD_CRD", "crd")) == "MAKD_CRD"


def test_sources_without_method_types_still_list_all_their_figures():
    _, _, figures = published_for({"DATASET.TYPE": "cub200", "DISTILLER.STUDENT": "ResNet18", "DISTILLER.TYPE": "AT"})
    assert {(f.source, f.method) for f in figures} == {
        ("makd_paper", "baseline"),
        ("makd_paper", "makd"),
        ("lavid_paper", "ce"),
        ("lavid_paper", "kd"),
        ("lavid_paper", "makd"),
        ("lavid_paper", "lavid"),
    }
