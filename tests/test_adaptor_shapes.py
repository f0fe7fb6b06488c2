"""The adaptors each official config builds for its student/teacher pair (mdistiller's files in the official MaKD
repository, read unchanged from its mirror): regressors, variance nets, connectors, embeddings, fusion modules."""

from __future__ import annotations

import subprocess

import pytest
from mirrors import absent_reason, mirror

from makd.config import load_cfg
from makd.distillers import build_distiller
from makd.models import build_student, input_family_of
from makd.models.teacher import ClassLogitsTeacher

REPOSITORY = "taegyeong-lee/MaKD-Multi-aspect-knowledge-distillation-with-Large-Language-Model"
C = 10


def _conv(module):
    return (module.in_channels, module.out_channels)


# config -> (what to read off the distiller, expected)
EXPECTED = {
    "cifar100/fitnet.yaml": (lambda d: [_conv(d.regressor[0]), d.regressor[0].kernel_size], [(128, 128), (1, 1)]),
    "cifar100/vid.yaml": (lambda d: [_conv(r[0]) for r in d.regressors], [(64, 64), (128, 128), (256, 256)]),
    "cifar100/ofd.yaml": (lambda d: [_conv(c[0]) for c in d.connectors], [(64, 64), (128, 128), (256, 256)]),
    "cifar100/crd.yaml": (
        lambda d: [
            d.embed_student.linear.in_features,
            d.embed_teacher.linear.in_features,
            d.embed_student.linear.out_features,
        ],
        [256, 256, 128],
    ),
    "cifar100/reviewkd.yaml": (
        lambda d: [[_conv(f.reduce[0]) for f in d.fusions], [f.expand[0].out_channels for f in d.fusions]],
        [[(256, 256), (256, 256), (128, 256), (64, 256)], [256, 256, 128, 64]],
    ),
    "cifar100/kdsvd.yaml": (lambda d: [len(d.student_shape.stages), d.k], [3, 1]),
    "imagenet/r34_r18/crd.yaml": (
        lambda d: [d.embed_student.linear.in_features, d.embed_teacher.linear.in_features],
        [512, 512],
    ),
    "imagenet/r34_r18/reviewkd.yaml": (
        lambda d: [[f.reduce[0].out_channels for f in d.fusions], [f.expand[0].out_channels for f in d.fusions]],
        [[512] * 5, [512, 512, 256, 128, 64]],
    ),
    "imagenet/r50_mv1/crd.yaml": (
        lambda d: [d.embed_student.linear.in_features, d.embed_teacher.linear.in_features],
        [1024, 2048],
    ),
    "imagenet/r50_mv1/ofd.yaml": (
        lambda d: [_conv(c[0]) for c in d.connectors],
        [(128, 256), (256, 512), (512, 1024), (1024, 2048)],
    ),
    "imagenet/r50_mv1/reviewkd.yaml": (
        lambda d: [[f.reduce[0].out_channels for f in d.fusions], [f.expand[0].out_channels for f in d.fusions]],
        [[256] * 5, [2048, 2048, 1024, 512, 256]],
    ),
}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    git_dir = mirror(REPOSITORY)
    if not git_dir.is_dir():
        pytest.skip(absent_reason(REPOSITORY))
    out = tmp_path_factory.mktemp("official")
    archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "HEAD", "configs"], capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out / "configs"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_adaptors_of_each_official_pair(official, name):
    opts = ["DATASET.TYPE", "cifar100"] if name.startswith("cifar100/") else []
    cfg = load_cfg(str(official / name), opts)
    family = input_family_of(cfg)
    student = build_student(cfg.DISTILLER.STUDENT, C, input_family=family)
    teacher = ClassLogitsTeacher(build_student(cfg.DISTILLER.TEACHER, C, input_family=family), C)
    distiller = build_distiller(cfg, student, C, 0, teacher, train_labels=list(range(C)) * 2)
    read, expected = EXPECTED[name]
    assert read(distiller) == expected
