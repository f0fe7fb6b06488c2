"""The detection student: torchvision's Faster R-CNN on an FPN over a named student's stages, plus aspect outputs.

Two variants of MaKD's aspect term (ALPHA and the BCE of classification, makd.distillers.losses):
  "box"    the box head is widened by Q outputs; each positive proposal is trained against the aspect row of
           the ground-truth box it is matched to (the proposal matcher's matched_idxs), NaN entries unsupervised;
  "image"  an auxiliary Linear on the pooled FPN features of the whole image, trained against image-level rows.
The class predictions (and so mAP) come from the usual C + 1 box classifier only.

The backbone is any student that `makd.models.build_student` builds whose layout has stages: torchvision
ResNets (stem + layer1..4), MobileNetV3 (features split at its strided blocks) and the CIFAR-style ResNets
(stem + stages, for small demo images). Its weights are random (never a download) or, with a local
checkpoint, those of a trained classifier (build_student's own loading: every weight but the classifier).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import MultiScaleRoIAlign

from makd.config.defaults import ASPECT_LEVELS
from makd.distillers.losses import aspect_bce, soften_targets
from makd.models import build_student
from makd.models.errors import StudentError


@dataclass(frozen=True)
class DetectorSettings:
    """Sizes of the detector; torchvision's Faster R-CNN defaults except where small CPU images need less."""

    min_size: int = 800  # shorter image side after the detector's own resize
    max_size: int = 1333  # longer side cap
    fpn_channels: int = 256  # FPN output channels (torchvision: 256)
    returned_stages: tuple[int, ...] = ()  # 1-based backbone stages fed to the FPN; () = all
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per FPN level (returned stages + the pool level)
    box_head_dim: int = 1024  # TwoMLPHead width
    rpn_batch_per_image: int = 256
    rpn_pre_nms_train: int = 2000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_test: int = 1000
    box_batch_per_image: int = 512
    score_thresh: float = 0.05
    detections_per_image: int = 100
    image_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    image_std: tuple[float, ...] = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- backbone
def student_stages(student: nn.Module, name: str) -> tuple[nn.Module, list[nn.Module]]:
    """(stem, stages) of a classifier: the modules that, applied in order, give features at growing strides."""
    if all(hasattr(student, f"layer{k}") for k in (1, 2, 3, 4)) and hasattr(student, "conv1"):  # torchvision ResNet
        stem = nn.Sequential(student.conv1, student.bn1, student.relu, student.maxpool)
        return stem, [student.layer1, student.layer2, student.layer3, student.layer4]
    if hasattr(student, "stem") and isinstance(getattr(student, "stages", None), nn.Sequential):  # CIFAR-style nets
        return student.stem, list(student.stages)
    features = getattr(student, "features", None)
    if isinstance(features, nn.Sequential) and any(getattr(b, "_is_cn", False) for b in features):  # MobileNetV3
        starts = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
        bounds = [0, *starts, len(features)]
        chunks = [features[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return chunks[0], chunks[1:]
    raise StudentError(
        f"DISTILLER.STUDENT {name!r} has no stages a detector can use (stem + stages); use a torchvision ResNet "
        "(resnet18, resnet50), mobilenet_v3_small / mobilenet_v3_large or a CIFAR-style ResNet (resnet8x4)"
    )


def build_backbone(name: str, settings: DetectorSettings, pretrained_path: str = "") -> BackboneWithFPN:
    """An FPN over the named student's stages (random init, or a local classifier checkpoint's weights)."""
    student = build_student(name, 1, pretrained_path=pretrained_path)  # the 1-output head is never used
    stem, stages = student_stages(student, name)
    chosen = list(settings.returned_stages) or list(range(1, len(stages) + 1))
    if any(not 1 <= k <= len(stages) for k in chosen) or chosen != sorted(set(chosen)):
        raise StudentError(
            f"DETECTION.RETURNED_STAGES {chosen} must be increasing stage numbers in 1..{len(stages)} "
            f"(student {name} has {len(stages)} stages)"
        )
    body = nn.Sequential(OrderedDict([("stem", stem), *((f"stage{k}", s) for k, s in enumerate(stages, 1))]))
    body = body[: 1 + chosen[-1]]  # stages after the last returned one would cost time and get no gradient
    with torch.no_grad():  # the channel count of each returned stage, measured rather than tabulated
        channels, x = {}, torch.zeros(1, 3, 64, 64)
        was_training = body.training
        body.eval()
        for child_name, child in body.named_children():
            x = child(x)
            channels[child_name] = x.shape[1]
        body.train(was_training)
    return_layers = {f"stage{k}": str(i) for i, k in enumerate(chosen)}
    return BackboneWithFPN(
        body,
        return_layers=return_layers,
        in_channels_list=[channels[f"stage{k}"] for k in chosen],
        out_channels=settings.fpn_channels,
    )


# ----------------------------------------------------------------------------- the aspect terms
def box_aspect_loss(
    aspect_logits: torch.Tensor,
    labels: list[torch.Tensor],
    matched_idxs: list[torch.Tensor],
    box_aspects: list[torch.Tensor],
    alpha: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """alpha * BCE of the positive proposals' aspect logits against their matched ground-truth box's row.

    aspect_logits [sum_i P_i, Q] over the sampled proposals of all images (in image order); labels[i] [P_i]
    (0 = background); matched_idxs[i] [P_i] index into image i's ground-truth boxes; box_aspects[i] [G_i, Q]
    teacher P(yes) per ground-truth box, NaN = unsupervised (a box stage 2 skipped, or no row).
    Mean over the supervised entries of positive proposals; 0 (still in the graph) when there are none.
    """
    positive_logits, rows = [], []
    for logits, image_labels, matched, aspects in zip(
        aspect_logits.split([len(x) for x in labels]), labels, matched_idxs, box_aspects
    ):
        positive = image_labels > 0
        positive_logits.append(logits[positive])
        rows.append(aspects[matched[positive]] if len(aspects) else aspects.new_zeros((0, logits.shape[1])))
    logits, targets = torch.cat(positive_logits), torch.cat(rows).to(aspect_logits.dtype)
    mask = torch.isfinite(targets)
    return alpha * aspect_bce(logits.float(), soften_targets(targets.float(), temperature), mask)


class AspectPredictor(nn.Module):
    """torchvision's FastRCNNPredictor (C + 1 scores, 4 (C + 1) deltas) with Q aspect logits on the same features."""

    def __init__(self, in_channels: int, num_classes_with_background: int, num_aspects: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes_with_background)
        self.bbox_pred = nn.Linear(in_channels, num_classes_with_background * 4)
        self.aspect_score = nn.Linear(in_channels, num_aspects) if num_aspects else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x = x.flatten(start_dim=1)
        aspects = self.aspect_score(x) if self.aspect_score is not None else None
        return self.cls_score(x), self.bbox_pred(x), aspects


class AspectRoIHeads(RoIHeads):
    """RoIHeads (boxes only) whose training loss adds the box aspect BCE of the positive proposals."""

    def __init__(self, *args, alpha: float = 4.0, temperature: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.alpha, self.temperature = alpha, temperature
        self.positive_samples = 0  # positive proposals the last training pass sampled (the training-health checks)

    @property
    def num_aspects(self) -> int:
        head = self.box_predictor.aspect_score
        return head.out_features if head is not None else 0

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
            self.positive_samples = sum(int((sampled > 0).sum()) for sampled in labels)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression, aspect_logits = self.box_predictor(box_features)
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            if aspect_logits is not None:
                losses["loss_aspect"] = box_aspect_loss(
                    aspect_logits, labels, matched_idxs, [t["aspects"] for t in targets], self.alpha, self.temperature
                )
            return [], losses
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        return [{"boxes": b, "labels": c, "scores": s} for b, c, s in zip(boxes, labels, scores)], {}

    def box_aspect_probabilities(self, features, boxes: list[torch.Tensor], image_shapes) -> list[torch.Tensor]:
        """sigmoid of the aspect logits [G_i, Q] at given boxes (the ground truth, for agreement with the teacher)."""
        if not any(len(b) for b in boxes):
            return [b.new_zeros((0, self.num_aspects)) for b in boxes]
        _, _, logits = self.box_predictor(self.box_head(self.box_roi_pool(features, boxes, image_shapes)))
        return list(torch.sigmoid(logits.float()).split([len(b) for b in boxes]))


class AspectFasterRCNN(FasterRCNN):
    """Faster R-CNN with the box-level aspect outputs (in the box predictor) or the image-level aspect head.

    forward(images list of [3, H, W] in [0, 1], targets) -> training: {loss name: scalar}; evaluation: one dict per
    image with "boxes" [D, 4] (x1, y1, x2, y2, input pixels), "labels" [D] (1..C), "scores" [D], and, when the
    targets are given, "gt_box_aspects" [G, Q] (box level: P(yes) at the ground-truth boxes) or "image_aspects" [Q].
    """

    def __init__(
        self,
        backbone: BackboneWithFPN,
        num_classes: int,
        num_aspects: int,
        aspect_level: str,
        settings: DetectorSettings,
        alpha: float = 4.0,
        temperature: float = 1.0,
    ) -> None:
        if aspect_level not in ASPECT_LEVELS:
            raise ValueError(f"aspect level {aspect_level!r} is unknown; use one of {', '.join(ASPECT_LEVELS)}")
        levels = [str(i) for i in range(len(backbone.body.return_layers))]
        if len(settings.anchor_sizes) != len(levels) + 1:  # + the max-pooled level the FPN adds on top
            raise StudentError(
                f"DETECTION.ANCHOR_SIZES {list(settings.anchor_sizes)} needs {len(levels) + 1} sizes: one per FPN "
                f"level ({len(levels)} returned stages + the pool level)"
            )
        box_aspects = num_aspects if aspect_level == "box" else 0
        roi_pool = MultiScaleRoIAlign(featmap_names=levels, output_size=7, sampling_ratio=2)
        super().__init__(
            backbone,
            num_classes=None,
            min_size=settings.min_size,
            max_size=settings.max_size,
            image_mean=list(settings.image_mean),
            image_std=list(settings.image_std),
            rpn_anchor_generator=AnchorGenerator(
                sizes=tuple((s,) for s in settings.anchor_sizes), aspect_ratios=((0.5, 1.0, 2.0),) * (len(levels) + 1)
            ),
            rpn_pre_nms_top_n_train=settings.rpn_pre_nms_train,
            rpn_post_nms_top_n_train=settings.rpn_post_nms_train,
            rpn_pre_nms_top_n_test=settings.rpn_pre_nms_test,
            rpn_post_nms_top_n_test=settings.rpn_post_nms_test,
            rpn_batch_size_per_image=settings.rpn_batch_per_image,
            box_roi_pool=roi_pool,
            box_head=TwoMLPHead(backbone.out_channels * 7 * 7, settings.box_head_dim),
            box_predictor=AspectPredictor(settings.box_head_dim, num_classes + 1, box_aspects),
            box_batch_size_per_image=settings.box_batch_per_image,
            box_score_thresh=settings.score_thresh,
            box_detections_per_img=settings.detections_per_image,
        )
        plain = self.roi_heads  # rebuilt as AspectRoIHeads with the same parts and thresholds
        self.roi_heads = AspectRoIHeads(
            plain.box_roi_pool,
            plain.box_head,
            plain.box_predictor,
            plain.proposal_matcher.high_threshold,
            plain.proposal_matcher.low_threshold,
            plain.fg_bg_sampler.batch_size_per_image,
            plain.fg_bg_sampler.positive_fraction,
            plain.box_coder.weights,
            plain.score_thresh,
            plain.nms_thresh,
            plain.detections_per_img,
            alpha=alpha,
            temperature=temperature,
        )
        self.num_classes, self.num_aspects, self.aspect_level = num_classes, num_aspects, aspect_level
        self.alpha, self.temperature = alpha, temperature
        self.image_aspect_head = (
            nn.Linear(backbone.out_channels, num_aspects) if aspect_level == "image" and num_aspects else None
        )

    def _image_aspect_logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, Q] from the mean over FPN levels of each level's global average pool."""
        pooled = torch.stack([F.adaptive_avg_pool2d(f, 1).flatten(1) for f in features.values()]).mean(dim=0)
        return self.image_aspect_head(pooled)

    def forward(self, images, targets=None):
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch, targets = self.transform(images, targets)  # resizes the targets' boxes with the images
        features = self.backbone(batch.tensors)
        proposals, rpn_losses = self.rpn(batch, features, targets)
        detections, head_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        if self.training:
            losses = {**head_losses, **rpn_losses}
            if self.image_aspect_head is not None:
                rows = torch.stack([t["image_aspects"] for t in targets]).float()
                losses["loss_image_aspect"] = self.alpha * aspect_bce(
                    self._image_aspect_logits(features).float(),
                    soften_targets(rows, self.temperature),
                    torch.isfinite(rows),
                )
            return losses
        if targets is not None and self.roi_heads.num_aspects:
            at_truth = self.roi_heads.box_aspect_probabilities(
                features, [t["boxes"] for t in targets], batch.image_sizes
            )
            for detection, probabilities in zip(detections, at_truth):
                detection["gt_box_aspects"] = probabilities
        if self.image_aspect_head is not None:
            for detection, probabilities in zip(detections, torch.sigmoid(self._image_aspect_logits(features))):
                detection["image_aspects"] = probabilities
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)


def build_detector(
    student: str,
    num_classes: int,
    num_aspects: int = 0,
    *,
    aspect_level: str = "box",
    settings: DetectorSettings | None = None,
    pretrained_path: str = "",
    alpha: float = 4.0,
    temperature: float = 1.0,
) -> AspectFasterRCNN:
    """A Faster R-CNN for `num_classes` categories (+ background) on the FPN of `student`, in train mode.

    num_aspects = 0 gives the plain detector (the baseline); otherwise Q aspect outputs at `aspect_level`.
    """
    settings = settings or DetectorSettings()
    backbone = build_backbone(student, settings, pretrained_path)
    return AspectFasterRCNN(backbone, num_classes, num_aspects, aspect_level, settings, alpha, temperature)
