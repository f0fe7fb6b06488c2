"""Every configuration key of the trainer, with its default and why it exists.

Key names of the official MaKD code (EXPERIMENT, DATASET, DISTILLER, SOLVER, MaKD, LOG) are kept
so its YAML files load unchanged; keys added here are marked (new).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from yacs.config import CfgNode as CN

from makd.errors import ConfigError
from makd.formats.files import read_utf8_text
from makd.formats.question_numbers import parse_ranges
from makd.formats.strict_yaml import load_yaml


class MethodNotImplementedError(ConfigError):
    """The config names a distillation method (DISTILLER.TYPE) or trainer (SOLVER.TRAINER) makd does not have."""


_C = CN()
_C.SEED = 0  # (new) seeds python, numpy and torch (all ranks); recorded in summary.json
_C.DEVICE = "auto"  # (new) "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:1", ...
_C.DETERMINISTIC = False  # (new) torch deterministic algorithms; slower on GPU, exact reruns
_C.OUTPUT_DIR = ""  # (new) run folder; "" = LOG.PREFIX/EXPERIMENT.PROJECT/EXPERIMENT.NAME
_C.NUM_THREADS = 0  # (new) torch CPU threads of the training process; 0 = auto (makd/data/cpu_threads.py)
# (new) what the student learns: "classification" (image classes) or "detection" (COCO-format boxes, a Faster
# R-CNN student; the DETECTION group below and docs/detection.md)
_C.TASK = "classification"

_C.EXPERIMENT = CN()
_C.EXPERIMENT.PROJECT = "makd"  # group of runs (run folder parent; wandb project)
_C.EXPERIMENT.NAME = ""  # run name; "" = derived from the config file name
_C.EXPERIMENT.TAG = "default"  # free-form tags, comma separated (wandb tags)

_C.DATASET = CN()
# Layout of the images: "auto" (release flat PNGs when names look like <class>_<label>_<idx>,
# else class folders), "image_folder" (root/<class>/<image>), "release_png" (the official flat
# folders), or a torchvision dataset: caltech101, oxford_pets, flowers102, dtd, fgvc_aircraft,
# stanford_cars, cifar100. "demo" is the built-in synthetic set (class folders). The official configs'
# dataset names (oxfordpets, caltech101, cub200, flowers, dtd, stanfordcars, aircraft, miniimagenet, cifar100,
# imagenet, tiny_imagenet, ...; makd.data.layouts.folders.OFFICIAL_DATASET_TYPES) read TRAIN/TEST_IMAGE_PATH
# with "auto" when TRAIN_IMAGE_PATH is set (the release's flat PNGs); without it, torchvision's names stay theirs.
_C.DATASET.TYPE = "auto"
_C.DATASET.NUM_CLASS = 0  # C; 0 = take it from the data; otherwise checked against the data
# Stage-2 aspect file, required by MaKD (or DATASET.ASPECT_SOURCES): per image {image_id: [p_1..p_Q]}, or per
# class {class: [p_1..p_Q]} / {class: [[p_q1..p_qM], ...]} (stage 2 --level class, LaViD's files), recognised by
# its keys and spread to every image of the class (makd/data/target_sources).
_C.DATASET.ASPECT_JSON = ""
# (new) Targets assembled by question from several files, concatenated in order (instead of ASPECT_JSON): each
# entry "PATH" (all its questions) or "PATH:NUMBERS", the file's questions by 1-based number ("1-10", "3,5-7"),
# e.g. ["internvl.json:1-30", "qwen_class.json:31-50"]: per-image targets for some questions, class-level for the
# others. One string per file keeps its path and questions together (yacs lists hold no nodes); each file's
# sidecar says which questions it answers (docs/class_level.md).
_C.DATASET.ASPECT_SOURCES = []
# (new) The questions a MaKD run trains on and is scored on: "" = all, "1-20" = the first 20, "1,4,7-9" = a list
# (1-based numbers of the questions file, as everywhere; a YAML list [1, 4, 7] is read as "1,4,7"). Applied alike
# to the training targets (ASPECT_JSON, or the questions ASPECT_SOURCES assembles), DATASET.TEST_ASPECT_JSON and
# DATASET.ASPECT_JSON_FLIP; outputs keep the questions' numbers (makd/formats/target_sources/selection.py).
_C.DATASET.QUESTIONS_USED = ""
# (new) Per-class aspect files: pairs of names the class_key rule does not match, a JSON object
# {dataset class: file class} or lines `dataset class<TAB>file class` (as LaViD.CLASS_MAP).
_C.DATASET.ASPECT_CLASS_MAP = ""
_C.DATASET.TEST_ASPECT_JSON = ""  # (new) aspect file of the test images, for the aspect-agreement metrics
_C.DATASET.QUESTIONS = ""  # (new) questions file the aspect file answers; checked against Q when set
_C.DATASET.TRAIN_IMAGE_PATH = ""  # training image root (folder layouts); image ids are relative to it
_C.DATASET.TEST_IMAGE_PATH = ""  # test image root; must differ from the training root
_C.DATASET.ROOT = "./data"  # (new) where torchvision datasets live (or are downloaded to)
_C.DATASET.DOWNLOAD = False  # (new) let torchvision download a missing dataset; off = offline
_C.DATASET.TRAIN_SPLIT_FILE = ""  # (new) image_folder: text file of image ids (one per line) for train
_C.DATASET.TEST_SPLIT_FILE = ""  # (new) image_folder: ids for test, when train and test share a root
_C.DATASET.VAL_FRACTION = 0.0  # (new) fraction of train held out (stratified) for model selection
_C.DATASET.VAL_SEED = 0  # (new) seed of the validation carve; fixed so every run sees the same split
_C.DATASET.MISSING_ASPECTS = "error"  # (new) train image without an aspect row: "error" or "drop"
_C.DATASET.IMAGE_SIZE = 224  # (new) side of the train crop and of the test CenterCrop
_C.DATASET.RESIZE_RATIO = 1.143  # (new) test Resize = IMAGE_SIZE * RATIO (256/224) before CenterCrop
_C.DATASET.MEAN = [0.485, 0.456, 0.406]  # (new) normalisation mean (ImageNet, as the official code)
_C.DATASET.STD = [0.229, 0.224, 0.225]  # (new) normalisation std
_C.DATASET.CACHE_IMAGES = False  # (new) decode + pre-resize every image once into a uint8 RAM cache
_C.DATASET.CHECK_IMAGES = True  # (new) decode every train/val/test image once before training (False: skip)
# DataLoader worker processes; -1 = from the machine (usable CPUs per process - 1, at most 8:
# makd/data/loader_settings.py). The batches are the same for any value.
_C.DATASET.NUM_WORKERS = -1
# (new) uint8 images on the device are converted to float laid out channels_last, and the student with them
# (faster convolutions on recent GPUs with AMP; unmeasured here: no GPU was available, so off by default)
_C.DATASET.CHANNELS_LAST = False
_C.DATASET.TEST = CN()
_C.DATASET.TEST.BATCH_SIZE = 64  # evaluation batch size (never drops the last batch)
_C.DATASET.ASPECT_JSON_FLIP = ""  # (new) stage 2 `--views flip` file: the teacher's rows for the mirrored images

# (new) Training augmentation (makd/data/transforms.py, makd/data/batch_mixing.py). The defaults are the
# official recipe: RandomResizedCrop(IMAGE_SIZE, scale 0.08-1, ratio 3/4-4/3) + horizontal flip, nothing
# else. Each sample's randomness is drawn from (SEED, epoch, sample index), so the batches do not depend
# on DATASET.NUM_WORKERS. Presets per input family: README "Training recipes".
_C.DATASET.AUGMENT = CN()
# Train crop: "rrc" (RandomResizedCrop with SCALE and RATIO), "crop_pad" (the CIFAR recipe: the image
# resized to IMAGE_SIZE, padded by PAD pixels of black on each side, a random IMAGE_SIZE crop), "resize"
# (shorter side to IMAGE_SIZE + centre crop: no randomness).
_C.DATASET.AUGMENT.CROP = "rrc"
_C.DATASET.AUGMENT.SCALE = [0.08, 1.0]  # rrc: range of the crop's area as a fraction of the image area
_C.DATASET.AUGMENT.RATIO = [0.75, 1.3333333333333333]  # rrc: range of the crop's width / height
_C.DATASET.AUGMENT.PAD = 4  # crop_pad: padding in pixels on each side
_C.DATASET.AUGMENT.HFLIP = True  # mirror left-right with probability 0.5 (see MaKD.FLIP_POLICY)
_C.DATASET.AUGMENT.POLICY = "none"  # "none", "trivial" (TrivialAugmentWide) or "randaugment"
_C.DATASET.AUGMENT.RANDAUGMENT_N = 2  # randaugment: operations per image
_C.DATASET.AUGMENT.RANDAUGMENT_M = 9  # randaugment: magnitude (0-30)
_C.DATASET.AUGMENT.ERASING = 0.0  # probability of random erasing (a box set to 0 after normalisation)
_C.DATASET.AUGMENT.LABEL_SMOOTHING = 0.0  # class targets (1 - e) * one_hot + e / C; aspect targets untouched
# Mixup / CutMix on whole batches (one lambda per batch, partner = a random permutation of the batch).
# A mixed image gets the mixed class targets AND the mixed aspect targets with the same lambda
# (lam * t_i + (1 - lam) * t_j; for CutMix lam is the area kept), and an aspect is supervised only when
# it is supervised in both images. 0 = off; both > 0: each batch picks one of the two with probability 1/2.
_C.DATASET.AUGMENT.MIXUP_ALPHA = 0.0  # Beta(alpha, alpha) of mixup's lambda (0.2-1.0 are usual)
_C.DATASET.AUGMENT.CUTMIX_ALPHA = 0.0  # Beta(alpha, alpha) of cutmix's lambda (1.0 is usual)
_C.DATASET.AUGMENT.MIX_PROB = 1.0  # probability that a batch is mixed at all (when an alpha is > 0)
# (new) The strong view, for methods that train on two views of each image (MLKD: DISTILLER.TYPE declares it): a
# second draw of the crop and flip above with this policy added, from the same per-sample seed after the first view
# (which stays what it is without the strong view). Random erasing applies to both views; mixup/CutMix are refused.
_C.DATASET.AUGMENT.STRONG = CN()
_C.DATASET.AUGMENT.STRONG.POLICY = "randaugment"  # "randaugment", "trivial" or "none"
_C.DATASET.AUGMENT.STRONG.RANDAUGMENT_N = 2  # randaugment: operations per image (MLKD: 2)
_C.DATASET.AUGMENT.STRONG.RANDAUGMENT_M = 10  # randaugment: magnitude 0-30 (MLKD: 10)

_C.DISTILLER = CN()
# The method, a name registered in makd/distillers (the config check lists them): "MaKD" (CE + aspect
# BCE), "NONE" (cross-entropy baseline), "KD", "DKD", "MaKD_KD", "MaKD_DKD", "LaViD", mdistiller's "FITNET", "AT",
# "SP", "VID", "RKD", "PKT", "NST", "KDSVD", "OFD", "CRD", "REVIEWKD", "MLKD", and "MaKD_<X>" for each of the last
# twelve (docs/methods.md). Each method adds its own key group (KD.*, AT.*, ...) through its module's add_config.
_C.DISTILLER.TYPE = "MaKD"
# The teacher. For methods with a CNN teacher (KD, DKD, the mdistiller family, MLKD, MaKD_<X>): its architecture,
# any student name. For the others it is recorded only (the MLLM teacher's knowledge is in DATASET.ASPECT_JSON).
_C.DISTILLER.TEACHER = "InternVL2-8B"
# (new) the CNN teacher's local weights: a makd student.pth, a training checkpoint or a plain state_dict
_C.DISTILLER.TEACHER_CHECKPOINT = ""
# (new) run the teacher once per training image on the test-time view before training and reuse those
# logits (for a large teacher); off = the online teacher on the same augmented view as the student
_C.DISTILLER.TEACHER_PRECOMPUTE = False
_C.DISTILLER.STUDENT = "resnet18"  # any timm / torchvision classifier, MobileNetV1 or a CIFAR-style net
_C.DISTILLER.STUDENT_PRETRAINED = ""  # (new) local checkpoint to start from (head re-initialised); "" = scratch

_C.SOLVER = CN()
# "base", "makd" or "crd" (the same trainer; kept for official configs), or "dot" (DOT's optimizer); see TRAINERS
_C.SOLVER.TRAINER = "base"
_C.SOLVER.BATCH_SIZE = 16  # per-process batch size (official: 16)
_C.SOLVER.EPOCHS = 240
_C.SOLVER.TYPE = "SGD"  # "SGD" (official) or "AdamW"
_C.SOLVER.LR = 0.01
_C.SOLVER.MOMENTUM = 0.9  # SGD only
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.SCHEDULER = "multistep"  # (new) "multistep" (official) or "cosine"
_C.SOLVER.LR_DECAY_STAGES = [150, 180, 210]  # multistep: epochs at which lr *= LR_DECAY_RATE
_C.SOLVER.LR_DECAY_RATE = 0.1
_C.SOLVER.WARMUP_EPOCHS = 0  # (new) linear warmup from lr/100 over this many epochs (per-step)
_C.SOLVER.MIN_LR = 0.0  # (new) cosine floor
_C.SOLVER.AMP = False  # (new) bfloat16/float16 autocast on CUDA; ignored on CPU
# (new) SOLVER.AMP's dtype: "auto" = bfloat16 where the GPU computes it natively (Ampere and later), else float16;
# "bfloat16" or "float16" to choose. float16 always runs with a loss scaler (its state is in the checkpoints).
_C.SOLVER.AMP_DTYPE = "auto"
AMP_DTYPES = ("auto", "bfloat16", "float16")
# (new) torch.compile the student in place (nn.Module.compile: checkpoints keep their keys). Off by default:
# unmeasured on a GPU, and the first steps pay the compilation (tens of seconds).
_C.SOLVER.COMPILE = False
_C.SOLVER.GRAD_CLIP = 0.0  # (new) clip the global gradient norm; 0 = off
# SOLVER.TRAINER dot (Zhao et al., ICCV 2023; mdistiller's keys)
_C.SOLVER.DOT = CN()
_C.SOLVER.DOT.DELTA = 0.075  # momentum MOMENTUM - DELTA for the task (CE) gradient, MOMENTUM + DELTA for distillation

_C.MaKD = CN()
_C.MaKD.ASPECT_NUM = 0  # Q: aspect outputs added to the head; 0 = from the aspect file, else must match it
_C.MaKD.ALPHA = 4.0  # weight of the aspect BCE loss
_C.MaKD.CE_WEIGHT = 1.0  # weight of the class cross-entropy
_C.MaKD.TEMPERATURE = 1.0  # target p -> sigmoid(logit(p) / T): T > 1 softens, T < 1 sharpens, 1 = as is
# (new) source of aspect targets, for the paper's controls: "teacher" (the file), "random"
# (uniform per image and aspect, fixed for the run), "shuffled" (rows permuted across images),
# "class_mean" (each image gets its class's mean row)
_C.MaKD.TARGETS = "teacher"
# (new) Target-aware views (makd/data/views.py). The teacher answered the whole, unflipped image; on a
# mirrored training view the answer to "Is the head on the left?" is wrong. Flip-sensitive questions
# (question numbers "q4", q1 = the first line of the questions file; old 0-based lists: docs/files.md) come from
# this list, from "flip_sensitive": [...] in the sidecar of DATASET.QUESTIONS, and from every mirror pair.
_C.MaKD.FLIP_SENSITIVE = []
_C.MaKD.FLIP_MIRROR = []  # pairs [["q4", "q5"], ...] of questions that swap under a flip (left <-> right); also sidecar
# On a mirrored view: "mask" (flip-sensitive targets leave the BCE for that sample), "mirror" (declared pairs
# swap their targets, other flip-sensitive ones are masked) or "keep" (targets as they are: the official
# code). With DATASET.ASPECT_JSON_FLIP (and MaKD.TARGETS teacher), mirrored views use those rows instead.
_C.MaKD.FLIP_POLICY = "mask"
_C.MaKD.MIN_CROP_AREA = 0.0  # crops showing less than this fraction of the image are "small"; 0 = off
_C.MaKD.SMALL_CROP = "mask"  # "mask" (a small crop's aspect targets all leave the BCE) or "bound" (no crop is
# smaller: the rrc scale range starts at MIN_CROP_AREA in MaKD runs)

# (new) TASK detection (makd/detection, docs/detection.md): a COCO-format set, a Faster R-CNN student on an FPN over
# DISTILLER.STUDENT's stages (DISTILLER.STUDENT_PRETRAINED: a local classifier checkpoint for the backbone), and
# MaKD's aspect term per box or per image. DISTILLER.TYPE NONE is the detector alone, MaKD adds the aspect term
# (MaKD.ALPHA, MaKD.TEMPERATURE, MaKD.TARGETS as in classification). Images are read from DATASET.TRAIN_IMAGE_PATH
# and DATASET.TEST_IMAGE_PATH (each instances file's file_names are relative to its folder), normalised with
# DATASET.MEAN / STD; the aspect rows come from DATASET.ASPECT_JSON (and DATASET.TEST_ASPECT_JSON for the
# agreement metrics). Sizes default to torchvision's Faster R-CNN; configs/detection/ has small CPU settings.
_C.DETECTION = CN()
_C.DETECTION.TRAIN_JSON = ""  # COCO instances file of the training images
_C.DETECTION.TEST_JSON = ""  # COCO instances file of the test images (mAP, per-category AP)
# "box": the box head gets Q aspect outputs, trained on the row of the ground-truth box each positive proposal is
# matched to; DATASET.ASPECT_JSON is keyed by box id "<image id>#<annotation id>" (stage 2 --boxes).
# "image": an auxiliary head on the pooled FPN features, trained on image-level rows keyed by the image id rule
# (file_name without extension; stage 2 on the images folder).
_C.DETECTION.ASPECT_LEVEL = "box"
# Training augmentation: mirror an image and its boxes with this probability (torchvision's detection references
# use 0.5). A mirrored item's aspect rows follow MaKD.FLIP_POLICY and the flip-sensitive questions, as in
# classification. DATASET.AUGMENT does not apply to detection.
_C.DETECTION.HFLIP_PROB = 0.0
_C.DETECTION.MIN_SIZE = 800  # shorter image side after the detector's resize (torchvision: 800)
_C.DETECTION.MAX_SIZE = 1333  # longer side cap (torchvision: 1333)
_C.DETECTION.FPN_CHANNELS = 256  # FPN output channels (torchvision: 256)
_C.DETECTION.RETURNED_STAGES = []  # 1-based backbone stages fed to the FPN; [] = all (ResNet: 1-4)
_C.DETECTION.ANCHOR_SIZES = [32, 64, 128, 256, 512]  # anchor side per FPN level: one per returned stage + 1 (pool)
_C.DETECTION.BOX_HEAD_DIM = 1024  # width of the two-layer box head (torchvision: 1024)
_C.DETECTION.RPN_BATCH_PER_IMAGE = 256  # anchors sampled per image for the RPN loss
_C.DETECTION.RPN_PRE_NMS_TRAIN = 2000  # proposals kept per level before NMS, training
_C.DETECTION.RPN_POST_NMS_TRAIN = 2000  # proposals kept after NMS, training
_C.DETECTION.RPN_PRE_NMS_TEST = 1000  # the same two at test time
_C.DETECTION.RPN_POST_NMS_TEST = 1000  # (proposals the box head scores per image)
_C.DETECTION.BOX_BATCH_PER_IMAGE = 512  # proposals sampled per image for the box head's losses (25% positive)
_C.DETECTION.SCORE_THRESH = 0.05  # detections below this score are dropped before evaluation (torchvision: 0.05)
_C.DETECTION.DETECTIONS_PER_IMAGE = 100  # at most this many detections per image (COCO evaluates 100)

_C.LOG = CN()
_C.LOG.PREFIX = "./output"  # run folders go under PREFIX/PROJECT/NAME
_C.LOG.TENSORBOARD_FREQ = 50  # write train scalars every this many steps
_C.LOG.SAVE_CHECKPOINT_FREQ = 40  # also keep epoch_<n>.pth every this many epochs (0 = never)
_C.LOG.WANDB = False  # log to Weights & Biases (needs `pip install wandb`); off by default
_C.LOG.EVAL_FREQ = 1  # (new) evaluate every this many epochs (and always on the last)

# (new) Training-health checks (makd/engine/health.py, docs/health.md): a run that learns nothing says so. Each finding
# is one warning line when it happens, an entry of `health` in summary.json (and in its epoch's metrics.jsonl row);
# tools/report.py, tools/study.py and the plots mark the runs that have one.
_C.HEALTH = CN()
_C.HEALTH.ENABLED = True  # off: no check, no extra backward pass, summary.json says "checked": false
# Optimizer steps (0-based, from the start of the run) at which each loss term's size and gradient norm on the layers
# the terms share are measured: one extra backward pass per measured term (the class term and each weighted
# auxiliary term) at each of these steps. A collapse shows within a few steps (docs/health.md), so a few suffice.
_C.HEALTH.GRAD_STEPS = [0, 1, 2, 4, 8, 16, 32]
# A term whose gradient norm exceeds this x the class term's is named, with its weight key. Healthy shipped configs
# stay below it (docs/health.md: largest measured ratio per method); LaViD at lambda 10 and lr 0.05 passes 50.
_C.HEALTH.GRAD_FACTOR = 10.0
_C.HEALTH.AFTER_EPOCHS = 2  # the epoch checks (class loss / top-1 at chance, mAP at 0, a flat loss) start here
# "At chance": training top-1 not above the largest class share + 3 binomial standard errors; the class loss is at
# chance when, with such a top-1, the epoch's mean class cross-entropy is >= (1 - this) x the entropy of the training
# labels (ln C when balanced).
_C.HEALTH.CHANCE_MARGIN = 0.01
_C.HEALTH.FLAT_EPOCHS = 3  # "stopped moving": the train loss over this many epochs spans less than
_C.HEALTH.FLAT_TOLERANCE = 0.002  # this fraction of its mean, while the lr is >= half its peak
# Findings that stop the run (a one-line error, exit code 2; the last finished epoch's latest.pth is kept), for job
# arrays: names of HEALTH_CHECKS, or "any".
_C.HEALTH.STOP_ON = []
HEALTH_CHECKS = (
    "gradient_share",
    "class_loss_at_chance",
    "train_top1_at_chance",
    "loss_flat",
    "zero_positives",
    "map_zero",
)


def get_cfg() -> CN:
    """A fresh copy of the defaults (never the shared global), with every registered method's key group."""
    from makd.distillers import distiller_classes  # late: the methods import torch; a report reading configs needs none

    cfg = _C.clone()
    for method in distiller_classes():
        method.add_config(cfg)
    return cfg


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist")
    text = read_utf8_text(path, "config file")
    try:
        data = load_yaml(text, path) or {}  # strictly: a key written twice (two SOLVER blocks) is an error
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    base = data.pop("_BASE_", None)
    if base:  # detectron2-style inheritance, relative to the file
        parent = _read_yaml(str(Path(path).parent / base))
        _deep_update(parent, data)
        data = parent
    return data


def _deep_update(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value


def _merge(cfg: CN, data: dict, where: str, prefix: str = "") -> None:
    """Merge `data` into `cfg`, raising a one-line ConfigError on an unknown key or a wrong type."""
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in cfg:
            import difflib

            close = difflib.get_close_matches(key, list(cfg.keys()), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(f"{where}: unknown config key {full}{hint}")
        current = cfg[key]
        if isinstance(current, CN):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {full} is a group of keys, got {value!r}")
            _merge(current, value, where, full + ".")
            continue
        cfg[key] = _coerce(value, current, full, where)


# Keys holding question ranges ("1-20", "1,4,7-9"): a YAML list of numbers is written as ranges; a bare number is
# refused, since "5" reads as both "question 5" and "the first 5".
QUESTION_RANGE_KEYS = ("DATASET.QUESTIONS_USED",)


def _question_ranges(value, key: str, where: str) -> str:
    if isinstance(value, (list, tuple)) and all(
        (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, str) for v in value
    ):
        return ",".join(str(v).strip() for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        raise ConfigError(
            f"{where}: {key} {value} could mean question {value} or the first {value} questions; write "
            f"'1-{value}' for the first {value}, or '{value}' (quoted) for question {value} alone"
        )
    if isinstance(value, str) or value is None:
        return value or ""
    raise ConfigError(f"{where}: {key} must be question numbers such as '1-20' or '1,4,7-9', got {value!r}")


def _coerce(value, default, key: str, where: str):
    if key in QUESTION_RANGE_KEYS:
        return _question_ranges(value, key, where)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if value is None:
            return ""
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    raise ConfigError(f"{where}: {key} must be {type(default).__name__} (like {default!r}), got {value!r}")


def _parse_opts(opts: Sequence[str]) -> dict:
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides come in KEY VALUE pairs, got an odd list: {list(opts)}")
    tree: dict = {}
    for key, raw in zip(opts[0::2], opts[1::2]):
        try:
            value = load_yaml(raw, f"command line: {key}") if raw != "" else ""
        except yaml.YAMLError:
            raise ConfigError(f"command line: {key} {raw!r} is not a valid value (YAML); quote it or fix it") from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"command line: {key} sets a key inside {part}, which is given a value too")
        node[parts[-1]] = value
    return tree


# Defaults that follow from DATASET.TYPE, for the keys a config leaves unset: mdistiller's CIFAR files name no
# image size, crop or normalisation (its CIFAR loader hard-codes them), so without these an official CIFAR-100
# config would train at 224 px with RandomResizedCrop.
DATASET_TYPE_DEFAULTS = {
    "cifar100": {
        "DATASET.IMAGE_SIZE": 32,
        "DATASET.RESIZE_RATIO": 1.0,
        "DATASET.AUGMENT.CROP": "crop_pad",  # RandomCrop(32, padding 4) + flip, the CIFAR recipe
        "DATASET.AUGMENT.PAD": 4,
        "DATASET.MEAN": [0.5071, 0.4865, 0.4409],
        "DATASET.STD": [0.2673, 0.2564, 0.2762],
    },
}


def flatten_tree(tree: dict, prefix: str = "") -> dict:
    """A nested config tree (parsed YAML, command-line overrides) by dotted key: {"A": {"B": 1}} -> {"A.B": 1}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_tree(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _apply_dataset_type_defaults(cfg: CN, given: set[str]) -> None:
    for key, value in DATASET_TYPE_DEFAULTS.get(cfg.DATASET.TYPE.lower(), {}).items():
        if key not in given:
            *groups, leaf = key.split(".")
            node = cfg
            for group in groups:
                node = node[group]
            node[leaf] = value


def load_cfg(path: str | None = None, opts: Sequence[str] = (), check: bool = True) -> CN:
    """Defaults <- YAML file <- KEY VALUE overrides, checked and frozen.

    The run name defaults to the config file's stem. `check` validates values that need no data
    (names, ranges, train/test folders being different); data-dependent checks happen on load.
    """
    cfg = get_cfg()
    data = _read_yaml(path) if path else {}
    overrides = _parse_opts(opts) if opts else {}
    # Before any key is merged: a file for a method makd lacks (mdistiller's AT, CRD, ...) carries that method's
    # config group (AT.*, CRD.*), which would otherwise fail as an unknown key instead of naming the method.
    check_method_implemented(data, overrides, path or "")
    if path:
        _merge(cfg, data, path)
    if overrides:
        _merge(cfg, overrides, "command line")
    _apply_dataset_type_defaults(cfg, set(flatten_tree(data)) | set(flatten_tree(overrides)))
    if not cfg.EXPERIMENT.NAME and path:
        cfg.EXPERIMENT.NAME = Path(path).stem
    if check:
        check_cfg(cfg)
    cfg.freeze()
    return cfg


def distiller_of(cfg: CN):
    """The registered class of cfg.DISTILLER.TYPE; an unknown name is a one-line ConfigError listing the methods."""
    from makd.distillers import distiller_class
    from makd.registry import UnknownNameError

    try:
        return distiller_class(cfg.DISTILLER.TYPE)
    except UnknownNameError as err:
        raise ConfigError(str(err)) from None


# SOLVER.TRAINER values of official configs that need nothing beyond the one trainer here ("makd": the MaKD
# repository's fine-grained config; "base": mdistiller's default; "crd": mdistiller's loader that draws CRD's
# contrastive indices, which makd's CRD distiller draws itself); "dot": DOT's optimizer, two momenta for the task and
# the distillation gradients (makd.engine.dot_optimizer, SOLVER.DOT.DELTA).
TRAINERS = ("base", "makd", "crd", "dot")


def _named(data: dict, overrides: dict, group: str, key: str, where: str) -> tuple[str | None, str]:
    """(value of group.key, who set it): the command line wins over the file; None unless a non-empty string."""
    for source, origin in ((overrides, "command line"), (data, where)):
        node = source.get(group)
        if isinstance(node, dict) and key in node:
            value = node[key]
            return (value if isinstance(value, str) and value else None), origin
    return None, where


def check_method_implemented(data: dict, overrides: dict, where: str) -> None:
    """One-line ConfigError when the file `where` (or the command line, which wins) names a method makd lacks: a
    DISTILLER.TYPE not in the registry `makd.distillers.DISTILLERS`, or a SOLVER.TRAINER not in TRAINERS.

    Runs before the keys are merged, so such a file stops on the method's name, not on its config group."""
    distiller, origin = _named(data, overrides, "DISTILLER", "TYPE", where)
    if distiller is not None:
        from makd.distillers import DISTILLERS, distiller_classes  # late, as in get_cfg

        if distiller not in DISTILLERS:
            raise MethodNotImplementedError(
                f"{origin}: DISTILLER.TYPE {distiller!r} is unknown (a method makd does not implement); "
                f"implemented: {', '.join(cls.name for cls in distiller_classes())}"
            )
    trainer, origin = _named(data, overrides, "SOLVER", "TRAINER", where)
    if trainer is not None and trainer.lower() not in TRAINERS:
        raise MethodNotImplementedError(
            f"{origin}: SOLVER.TRAINER {trainer!r} is unknown (a method makd does not implement: "
            f"{trainer.upper()}); implemented trainers: {', '.join(TRAINERS)}"
        )


def uses_aspects(cfg: CN) -> bool:
    """Whether the configured distiller trains on aspect targets (and so widens the head by Q); asks the registry."""
    return distiller_of(cfg).needs_aspects


def uses_teacher(cfg: CN) -> bool:
    """Whether the configured distiller needs a CNN teacher (DISTILLER.TEACHER + TEACHER_CHECKPOINT)."""
    return distiller_of(cfg).needs_teacher


TARGET_MODES = ("teacher", "random", "shuffled", "class_mean")
TASKS = ("classification", "detection")  # values of TASK: each is a task of makd.tasks (makd.engine.tasks.TASKS)


def check_cfg(cfg: CN) -> None:
    """Checks that need no data; each failure is one line naming the key and the fix."""
    if cfg.TASK not in TASKS:
        raise ConfigError(f"TASK {cfg.TASK!r} is unknown; use one of {', '.join(TASKS)}")
    method = distiller_of(cfg)
    method.check_config(cfg)
    if cfg.MaKD.TARGETS not in TARGET_MODES:
        raise ConfigError(f"MaKD.TARGETS {cfg.MaKD.TARGETS!r} is unknown; use one of {', '.join(TARGET_MODES)}")
    if cfg.DATASET.MISSING_ASPECTS not in ("error", "drop"):
        raise ConfigError(f"DATASET.MISSING_ASPECTS {cfg.DATASET.MISSING_ASPECTS!r} must be 'error' or 'drop'")
    if cfg.SOLVER.TYPE.lower() not in ("sgd", "adamw"):
        raise ConfigError(f"SOLVER.TYPE {cfg.SOLVER.TYPE!r} is unknown; use SGD or AdamW")
    if cfg.SOLVER.SCHEDULER.lower() not in ("multistep", "cosine"):
        raise ConfigError(f"SOLVER.SCHEDULER {cfg.SOLVER.SCHEDULER!r} is unknown; use multistep or cosine")
    if cfg.SOLVER.AMP_DTYPE not in AMP_DTYPES:
        raise ConfigError(f"SOLVER.AMP_DTYPE {cfg.SOLVER.AMP_DTYPE!r} is unknown; use {', '.join(AMP_DTYPES)}")
    if cfg.SOLVER.TRAINER.lower() == "dot":
        check_dot_cfg(cfg)
    if cfg.MaKD.TEMPERATURE <= 0:
        raise ConfigError(f"MaKD.TEMPERATURE must be > 0, got {cfg.MaKD.TEMPERATURE}")
    if not 0.0 <= cfg.DATASET.VAL_FRACTION < 1.0:
        raise ConfigError(f"DATASET.VAL_FRACTION must be in [0, 1), got {cfg.DATASET.VAL_FRACTION}")
    if cfg.SOLVER.EPOCHS < 1 or cfg.SOLVER.BATCH_SIZE < 1:
        raise ConfigError("SOLVER.EPOCHS and SOLVER.BATCH_SIZE must be >= 1")
    if cfg.MaKD.ASPECT_NUM < 0:
        raise ConfigError(f"MaKD.ASPECT_NUM must be >= 0 (0 = from the aspect file), got {cfg.MaKD.ASPECT_NUM}")
    if cfg.DATASET.QUESTIONS_USED:
        parse_ranges(cfg.DATASET.QUESTIONS_USED, "DATASET.QUESTIONS_USED")  # the form now; the numbers with the data
    if cfg.NUM_THREADS < 0:
        raise ConfigError(f"NUM_THREADS must be >= 0 (0 = auto), got {cfg.NUM_THREADS}")
    check_augment_cfg(cfg)
    check_health_cfg(cfg)
    if cfg.TASK == "detection":
        check_detection_cfg(cfg)
    train, test = cfg.DATASET.TRAIN_IMAGE_PATH, cfg.DATASET.TEST_IMAGE_PATH
    # (detection: the instances files say which images are test images; one folder may hold both)
    same = train and test and os.path.realpath(train) == os.path.realpath(test)
    if cfg.TASK == "classification" and same and not cfg.DATASET.TEST_SPLIT_FILE:
        raise ConfigError(
            f"DATASET.TRAIN_IMAGE_PATH and DATASET.TEST_IMAGE_PATH are the same folder ({train}); "
            "point TEST_IMAGE_PATH at the held-out images or give DATASET.TRAIN_SPLIT_FILE/TEST_SPLIT_FILE"
        )
    check_value_ranges(cfg)


def check_dot_cfg(cfg: CN) -> None:
    """SOLVER.TRAINER dot: a method with a distillation term, SGD, and momenta MOMENTUM -/+ DOT.DELTA in [0, 1)."""
    if cfg.DISTILLER.TYPE.upper() in ("NONE", "CE"):
        raise ConfigError(
            "SOLVER.TRAINER dot splits the task and the distillation gradients, but DISTILLER.TYPE "
            f"{cfg.DISTILLER.TYPE} has no distillation term; use SOLVER.TRAINER base"
        )
    m, delta = cfg.SOLVER.MOMENTUM, cfg.SOLVER.DOT.DELTA
    if not 0.0 <= delta <= m or m + delta >= 1.0:
        raise ConfigError(
            f"SOLVER.DOT.DELTA {delta} with SOLVER.MOMENTUM {m}: the momenta {m} - {delta} and {m} + {delta} must lie "
            "in [0, 1)"
        )


_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_value_ranges(cfg: CN) -> None:
    """Numbers outside their meaningful range (a negative loss weight would train toward a worse model)."""
    if not _DEVICE_PATTERN.fullmatch(cfg.DEVICE):
        raise ConfigError(f"DEVICE {cfg.DEVICE!r} is unknown; use auto, cpu, cuda or cuda:N")
    s = cfg.SOLVER
    checks = [
        ("SOLVER.LR", s.LR, s.LR > 0, "> 0"),
        ("SOLVER.WEIGHT_DECAY", s.WEIGHT_DECAY, s.WEIGHT_DECAY >= 0, ">= 0"),
        ("SOLVER.MOMENTUM", s.MOMENTUM, 0 <= s.MOMENTUM < 1, "in [0, 1)"),
        ("SOLVER.LR_DECAY_RATE", s.LR_DECAY_RATE, s.LR_DECAY_RATE > 0, "> 0"),
        ("SOLVER.WARMUP_EPOCHS", s.WARMUP_EPOCHS, s.WARMUP_EPOCHS >= 0, ">= 0"),
        ("SOLVER.MIN_LR", s.MIN_LR, s.MIN_LR >= 0, ">= 0"),
        ("SOLVER.GRAD_CLIP", s.GRAD_CLIP, s.GRAD_CLIP >= 0, ">= 0 (0 = off)"),
        ("MaKD.ALPHA", cfg.MaKD.ALPHA, cfg.MaKD.ALPHA >= 0, ">= 0"),
        ("MaKD.CE_WEIGHT", cfg.MaKD.CE_WEIGHT, cfg.MaKD.CE_WEIGHT >= 0, ">= 0"),
        ("DATASET.NUM_WORKERS", cfg.DATASET.NUM_WORKERS, cfg.DATASET.NUM_WORKERS >= -1, ">= 0, or -1 for auto"),
        ("DATASET.TEST.BATCH_SIZE", cfg.DATASET.TEST.BATCH_SIZE, cfg.DATASET.TEST.BATCH_SIZE >= 1, ">= 1"),
        ("DATASET.IMAGE_SIZE", cfg.DATASET.IMAGE_SIZE, cfg.DATASET.IMAGE_SIZE >= 1, ">= 1"),
        ("DATASET.RESIZE_RATIO", cfg.DATASET.RESIZE_RATIO, cfg.DATASET.RESIZE_RATIO >= 1, ">= 1"),
        ("LOG.TENSORBOARD_FREQ", cfg.LOG.TENSORBOARD_FREQ, cfg.LOG.TENSORBOARD_FREQ >= 0, ">= 0"),
        ("LOG.SAVE_CHECKPOINT_FREQ", cfg.LOG.SAVE_CHECKPOINT_FREQ, cfg.LOG.SAVE_CHECKPOINT_FREQ >= 0, ">= 0"),
        ("LOG.EVAL_FREQ", cfg.LOG.EVAL_FREQ, cfg.LOG.EVAL_FREQ >= 1, ">= 1"),
    ]
    for key, value, ok, rule in checks:
        if not ok or not math.isfinite(value):  # NaN fails every comparison; infinity passes some
            raise ConfigError(f"{key} must be {rule}, got {value}")
    stages = s.LR_DECAY_STAGES
    if not all(isinstance(stage, int) and not isinstance(stage, bool) and stage >= 1 for stage in stages):
        raise ConfigError(f"SOLVER.LR_DECAY_STAGES must be epochs >= 1 (like [150, 180, 210]), got {list(stages)}")


CROP_MODES = ("rrc", "crop_pad", "resize")
AUGMENT_POLICIES = ("none", "trivial", "randaugment")
FLIP_POLICIES = ("mask", "mirror", "keep")
SMALL_CROP_MODES = ("mask", "bound")


def _check_range(key: str, value: Sequence[float], low: float, high: float) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ConfigError(f"{key} must be [min, max] with {low} <= min <= max <= {high}, got {list(value)}")


def check_augment_cfg(cfg: CN) -> None:
    """DATASET.AUGMENT and the MaKD view keys: names known, ranges valid (indices are checked against Q on load)."""
    a, m = cfg.DATASET.AUGMENT, cfg.MaKD
    for key, value, allowed in (
        ("DATASET.AUGMENT.CROP", a.CROP, CROP_MODES),
        ("DATASET.AUGMENT.POLICY", a.POLICY, AUGMENT_POLICIES),
        ("MaKD.FLIP_POLICY", m.FLIP_POLICY, FLIP_POLICIES),
        ("MaKD.SMALL_CROP", m.SMALL_CROP, SMALL_CROP_MODES),
    ):
        if value not in allowed:
            raise ConfigError(f"{key} {value!r} is unknown; use one of {', '.join(allowed)}")
    _check_range("DATASET.AUGMENT.SCALE", a.SCALE, 0.0, 1.0)
    if a.SCALE[1] <= 0:
        raise ConfigError(f"DATASET.AUGMENT.SCALE must end above 0, got {list(a.SCALE)}")
    _check_range("DATASET.AUGMENT.RATIO", a.RATIO, 1e-3, 1e3)
    for key, value in (
        ("DATASET.AUGMENT.ERASING", a.ERASING),
        ("DATASET.AUGMENT.MIX_PROB", a.MIX_PROB),
        ("MaKD.MIN_CROP_AREA", m.MIN_CROP_AREA),
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key} must be in [0, 1], got {value}")
    if not 0.0 <= a.LABEL_SMOOTHING < 1.0:
        raise ConfigError(f"DATASET.AUGMENT.LABEL_SMOOTHING must be in [0, 1), got {a.LABEL_SMOOTHING}")
    if a.MIXUP_ALPHA < 0 or a.CUTMIX_ALPHA < 0:
        raise ConfigError("DATASET.AUGMENT.MIXUP_ALPHA and CUTMIX_ALPHA must be >= 0 (0 = off)")
    if a.PAD < 0 or a.RANDAUGMENT_N < 0 or not 0 <= a.RANDAUGMENT_M <= 30:
        raise ConfigError("DATASET.AUGMENT.PAD and RANDAUGMENT_N must be >= 0 and RANDAUGMENT_M in 0..30")
    strong = a.STRONG
    if strong.POLICY not in AUGMENT_POLICIES:
        raise ConfigError(
            f"DATASET.AUGMENT.STRONG.POLICY {strong.POLICY!r} is unknown; use one of {', '.join(AUGMENT_POLICIES)}"
        )
    if strong.RANDAUGMENT_N < 0 or not 0 <= strong.RANDAUGMENT_M <= 30:
        raise ConfigError("DATASET.AUGMENT.STRONG.RANDAUGMENT_N must be >= 0 and RANDAUGMENT_M in 0..30")
    if distiller_of(cfg).needs_strong_view and (a.MIXUP_ALPHA > 0 or a.CUTMIX_ALPHA > 0):
        raise ConfigError(
            f"DISTILLER.TYPE {cfg.DISTILLER.TYPE} trains on a weak and a strong view of each image; mixup and CutMix "
            "are not defined for the pair: set DATASET.AUGMENT.MIXUP_ALPHA and CUTMIX_ALPHA to 0"
        )


DETECTION_METHODS = ("NONE", "MaKD")  # the detector alone, or with MaKD's aspect term
ASPECT_LEVELS = ("box", "image")


def check_detection_cfg(cfg: CN) -> None:
    """The DETECTION keys and what TASK detection supports; one line each, naming the key and the fix."""
    d = cfg.DETECTION
    if cfg.DISTILLER.TYPE not in DETECTION_METHODS:
        raise ConfigError(
            f"DISTILLER.TYPE {cfg.DISTILLER.TYPE!r} is not available for TASK detection; use "
            f"{' or '.join(DETECTION_METHODS)}"
        )
    if d.ASPECT_LEVEL not in ASPECT_LEVELS:
        raise ConfigError(
            f"DETECTION.ASPECT_LEVEL {d.ASPECT_LEVEL!r} is unknown; use one of {', '.join(ASPECT_LEVELS)}"
        )
    for key in ("TRAIN_JSON", "TEST_JSON"):
        if not d[key]:
            raise ConfigError(f"DETECTION.{key} is empty; give the COCO instances file of the split")
    for key in ("TRAIN_IMAGE_PATH", "TEST_IMAGE_PATH"):
        if not cfg.DATASET[key]:
            raise ConfigError(f"DATASET.{key} is empty; give the images folder the instances file's file_names are in")
    positive = (
        "MIN_SIZE",
        "MAX_SIZE",
        "FPN_CHANNELS",
        "BOX_HEAD_DIM",
        "RPN_BATCH_PER_IMAGE",
        "RPN_PRE_NMS_TRAIN",
        "RPN_POST_NMS_TRAIN",
        "RPN_PRE_NMS_TEST",
        "RPN_POST_NMS_TEST",
        "BOX_BATCH_PER_IMAGE",
        "DETECTIONS_PER_IMAGE",
    )
    for key in positive:
        if d[key] < 1:
            raise ConfigError(f"DETECTION.{key} must be >= 1, got {d[key]}")
    if d.MAX_SIZE < d.MIN_SIZE:
        raise ConfigError(f"DETECTION.MAX_SIZE {d.MAX_SIZE} is below DETECTION.MIN_SIZE {d.MIN_SIZE}")
    if not d.ANCHOR_SIZES or any(not isinstance(s, int) or s < 1 for s in d.ANCHOR_SIZES):
        raise ConfigError(f"DETECTION.ANCHOR_SIZES must be positive integers in pixels, got {list(d.ANCHOR_SIZES)}")
    if not 0.0 <= d.SCORE_THRESH < 1.0:
        raise ConfigError(f"DETECTION.SCORE_THRESH must be in [0, 1), got {d.SCORE_THRESH}")
    if not 0.0 <= d.HFLIP_PROB <= 1.0:
        raise ConfigError(f"DETECTION.HFLIP_PROB must be in [0, 1], got {d.HFLIP_PROB}")
    if cfg.DATASET.ASPECT_JSON_FLIP:
        raise ConfigError(
            "DATASET.ASPECT_JSON_FLIP is not supported for TASK detection (mirrored items use MaKD.FLIP_POLICY); "
            "leave it empty"
        )


def check_health_cfg(cfg: CN) -> None:
    """The HEALTH keys: known finding names in STOP_ON, steps >= 0, factors and tolerances in range."""
    h = cfg.HEALTH
    unknown = [name for name in h.STOP_ON if name not in HEALTH_CHECKS + ("any",)]
    if unknown:
        raise ConfigError(
            f"HEALTH.STOP_ON names {unknown[0]!r}, not a training-health check; use any of {', '.join(HEALTH_CHECKS)} "
            "or 'any'"
        )
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in h.GRAD_STEPS):
        raise ConfigError(f"HEALTH.GRAD_STEPS must be optimizer steps >= 0 (like [0, 1, 2]), got {list(h.GRAD_STEPS)}")
    for key, ok, rule in (
        ("GRAD_FACTOR", h.GRAD_FACTOR > 0, "> 0"),
        ("AFTER_EPOCHS", h.AFTER_EPOCHS >= 1, ">= 1"),
        ("CHANCE_MARGIN", 0 <= h.CHANCE_MARGIN < 1, "in [0, 1)"),
        ("FLAT_EPOCHS", h.FLAT_EPOCHS >= 2, ">= 2"),
        ("FLAT_TOLERANCE", h.FLAT_TOLERANCE >= 0, ">= 0"),
    ):
        if not ok:
            raise ConfigError(f"HEALTH.{key} must be {rule}, got {h[key]}")
