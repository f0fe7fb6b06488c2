"""The detection student (issue 13, item 3): FPN over a student's stages, the per-box and image-level aspect terms."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from makd.detection.model import DetectorSettings, box_aspect_loss, build_detector
from makd.errors import MakdError
from makd.models import build_student

NAN = float("nan")
SMALL = DetectorSettings(
    min_size=64,
    max_size=64,
    fpn_channels=16,
    returned_stages=(2, 3),
    anchor_sizes=(16, 32, 64),
    box_head_dim=32,
    rpn_batch_per_image=32,
    rpn_pre_nms_train=100,
    rpn_post_nms_train=50,
    rpn_pre_nms_test=100,
    rpn_post_nms_test=50,
    box_batch_per_image=32,
)


def _targets(num_aspects: int = 3) -> list[dict[str, torch.Tensor]]:
    return [
        {
            "boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0], [34.0, 30.0, 60.0, 62.0]]),
            "labels": torch.tensor([1, 2]),
            "aspects": torch.tensor([[0.9, 0.1, NAN], [0.2, 0.8, 0.6]])[:, :num_aspects],
            "image_aspects": torch.tensor([0.7, NAN, 0.3])[:num_aspects],
        },
        {
            "boxes": torch.tensor([[10.0, 20.0, 50.0, 40.0]]),
            "labels": torch.tensor([2]),
            "aspects": torch.tensor([[NAN, NAN, NAN]])[:, :num_aspects],
            "image_aspects": torch.tensor([0.1, 0.5, 0.9])[:num_aspects],
        },
    ]


def _images(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 64, 64, generator=generator) for _ in range(2)]


def test_box_aspect_loss_uses_the_matched_ground_truth_row_of_positive_proposals_only():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0], [-0.3, 0.7], [1.0, 1.0]])  # 3 proposals of image 0, 1 of image 1
    labels = [torch.tensor([2, 0, 1]), torch.tensor([1])]  # proposal 1 is background: never supervised
    matched = [torch.tensor([1, 0, 0]), torch.tensor([0])]
    rows = [torch.tensor([[0.9, NAN], [0.2, 0.6]]), torch.tensor([[NAN, 0.4]])]
    # supervised (logit, target) pairs: p0 -> row 1 (0.2, 0.6); p2 -> row 0 (0.9, NaN masked); image 1 p0 -> (NaN, 0.4)
    pairs = [(0.5, 0.2), (-1.0, 0.6), (-0.3, 0.9), (1.0, 0.4)]
    expected = sum(float(F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(t))) for x, t in pairs) / len(
        pairs
    )
    loss = box_aspect_loss(logits, labels, matched, rows, alpha=4.0)
    assert float(loss) == pytest.approx(4.0 * expected, rel=1e-6)
    # no positive proposal: zero, yet still a tensor of the graph (DDP needs every parameter's gradient)
    empty = box_aspect_loss(
        logits.requires_grad_(), [torch.zeros(3, dtype=torch.long), torch.tensor([0])], matched, rows, alpha=4.0
    )
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_roi_heads_train_each_ground_truth_box_against_its_own_row():
    torch.manual_seed(0)
    detector = build_detector("resnet18", 2, 3, settings=SMALL, alpha=2.0).train()
    heads = detector.roi_heads
    with torch.no_grad():  # confident, box-dependent aspect outputs, so which row a box meets matters
        heads.box_predictor.aspect_score.weight.mul_(30.0)
    targets = _targets()
    features = OrderedDict((str(i), torch.randn(2, 16, 64 // s, 64 // s)) for i, s in enumerate((8, 16, 32)))
    sizes = [(64, 64), (64, 64)]
    # no RPN proposals: torchvision adds the ground-truth boxes, so the positives are exactly those boxes
    _, losses = heads(features, [torch.zeros(0, 4), torch.zeros(0, 4)], sizes, targets)
    heads.eval()
    with torch.no_grad():
        probabilities = heads.box_aspect_probabilities(features, [t["boxes"] for t in targets], sizes)
    predicted = torch.cat(probabilities).clamp(1e-7, 1 - 1e-7)

    def expected(rows_of_images):
        rows = torch.cat(rows_of_images)
        mask = torch.isfinite(rows)
        bce = -(rows * predicted.log() + (1 - rows) * (1 - predicted).log())
        return 2.0 * float(bce[mask].mean())

    assert float(losses["loss_aspect"].detach()) == pytest.approx(expected([t["aspects"] for t in targets]), rel=1e-4)
    # the rows of image 0's two boxes exchanged: the loss follows the rows, box by box
    swapped = [dict(targets[0], aspects=targets[0]["aspects"][[1, 0]]), targets[1]]
    heads.train()
    _, other = heads(features, [torch.zeros(0, 4), torch.zeros(0, 4)], sizes, swapped)
    assert float(other["loss_aspect"].detach()) == pytest.approx(expected([t["aspects"] for t in swapped]), rel=1e-4)
    assert abs(float(other["loss_aspect"].detach()) - float(losses["loss_aspect"].detach())) > 0.05


@pytest.mark.parametrize(
    ("level", "num_aspects", "extra"),
    [("box", 0, set()), ("box", 3, {"loss_aspect"}), ("image", 3, {"loss_image_aspect"})],
)
def test_training_losses_are_named_finite_and_the_aspect_term_learns(level, num_aspects, extra):
    torch.manual_seed(0)
    detector = build_detector("resnet18", 2, num_aspects, aspect_level=level, settings=SMALL)
    base = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.005, momentum=0.9)
    # hard 0/1 targets, so the BCE's floor is 0 (soft targets bound it below by their entropy)
    targets = [{**t, "aspects": t["aspects"].round(), "image_aspects": t["image_aspects"].round()} for t in _targets()]
    history = []
    for _ in range(12):
        torch.manual_seed(1)  # the same proposal sampling every step: the aspect loss can only fall by learning
        losses = detector(_images(), targets)
        assert set(losses) == base | extra
        assert all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    for key in extra:
        assert history[-1][key] < 0.5 * history[0][key]


def test_evaluation_returns_detections_and_the_aspects_at_the_ground_truth():
    torch.manual_seed(0)
    box = build_detector("resnet18", 2, 3, settings=SMALL).eval()
    image = build_detector("resnet18", 2, 3, aspect_level="image", settings=SMALL).eval()
    with torch.no_grad():
        out_box = box(_images(), _targets())
        out_image = image(_images(), _targets())
        plain = box(_images())
    assert [o["gt_box_aspects"].shape for o in out_box] == [(2, 3), (1, 3)]
    assert all(((o["gt_box_aspects"] >= 0) & (o["gt_box_aspects"] <= 1)).all() for o in out_box)
    assert [o["image_aspects"].shape for o in out_image] == [(3,), (3,)]
    assert "gt_box_aspects" not in plain[0]
    for o in out_box:
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) == len(o["scores"]) == len(o["labels"])
        assert ((o["labels"] >= 1) & (o["labels"] <= 2)).all()
    # the ground-truth aspects do not change the detections
    assert torch.equal(out_box[0]["boxes"], plain[0]["boxes"])


def test_mobilenet_v3_and_cifar_resnet_backbones_build_and_train():
    for name, stages in (("mobilenet_v3_small", (3, 4)), ("resnet8", (2, 3))):
        torch.manual_seed(0)
        settings = DetectorSettings(**{**SMALL.__dict__, "returned_stages": stages})
        losses = build_detector(name, 2, 3, settings=settings)(_images(), _targets())
        assert "loss_aspect" in losses and all(torch.isfinite(v) for v in losses.values())


def test_backbone_starts_from_a_local_classifier_checkpoint(tmp_path: Path):
    torch.manual_seed(3)
    classifier = build_student("resnet18", 7)
    path = tmp_path / "student.pth"
    torch.save({"model": classifier.state_dict(), "student": "resnet18"}, path)
    detector = build_detector("resnet18", 2, 3, settings=SMALL, pretrained_path=str(path))
    body = detector.backbone.body
    assert torch.equal(body.stage2[0].conv1.weight, classifier.layer2[0].conv1.weight)
    assert torch.equal(body.stem[0].weight, classifier.conv1.weight)
    scratch = build_detector("resnet18", 2, 3, settings=SMALL)
    assert not torch.equal(scratch.backbone.body.stem[0].weight, classifier.conv1.weight)
    with pytest.raises(MakdError, match="does not exist"):
        build_detector("resnet18", 2, 3, settings=SMALL, pretrained_path=str(tmp_path / "nope.pth"))


def test_bad_backbone_settings_are_one_line_errors():
    with pytest.raises(MakdError, match=r"ANCHOR_SIZES \[16, 32\] needs 3 sizes"):
        build_detector("resnet18", 2, 0, settings=DetectorSettings(**{**SMALL.__dict__, "anchor_sizes": (16, 32)}))
    with pytest.raises(MakdError, match=r"RETURNED_STAGES \[3, 5\] must be increasing stage numbers in 1..4"):
        build_detector("resnet18", 2, 0, settings=DetectorSettings(**{**SMALL.__dict__, "returned_stages": (3, 5)}))
    with pytest.raises(MakdError, match="has no stages a detector can use"):
        build_detector("MobileNetV1", 2, 0, settings=SMALL)
