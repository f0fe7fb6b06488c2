"""Training-health checks: a run that learns nothing says so, in its log, its summary.json and every table of it.

A run can finish normally, write every file and still have learned nothing: an auxiliary term whose gradient
swamps the class loss kills the features in a few steps (LaViD at a large lambda and a CIFAR learning rate), a
broken data path gives a detector no positive box. The trainer calls `TrainingHealth` at four places (each step,
the end of each epoch, after the epoch is saved, the summary); the checks are:

first steps (HEALTH.GRAD_STEPS)
    gradient_share        each loss term's size, and the gradient norm on the layers the terms share (the student
                          without its output layers) of each term next to the class terms' (the labels' CE, and a
                          CNN teacher's class terms in the KD family: Distiller.class_terms); a term whose gradient
                          exceeds HEALTH.GRAD_FACTOR x theirs is named with the weight key to lower (and, for a method
                          that knows its own stability limit, the value that trains: Distiller.first_step_notes).
                          Measuring costs one extra backward pass per measured term (the class terms' sum and each
                          other term) at each of these steps, nothing at the others.
after HEALTH.AFTER_EPOCHS epochs (classification)
    class_loss_at_chance  the epoch's mean class cross-entropy (unweighted) at (within HEALTH.CHANCE_MARGIN) or above
                          the entropy of the training labels (ln C for balanced classes), the prediction of a student
                          that has learned nothing about the images, while its top-1 is at chance (below)
    train_top1_at_chance  training top-1 not above chance: the largest class share + 3 binomial standard errors
any task
    loss_flat             the train loss over HEALTH.FLAT_EPOCHS epochs spans less than HEALTH.FLAT_TOLERANCE of its
                          mean while the learning rate is at least half its peak (a dead network's loss is constant;
                          a learning one moves, if only by its sampling noise)
detection
    zero_positives        an epoch in which the box head sampled no positive proposal (no box reached training)
    map_zero              every evaluated mAP still 0 after HEALTH.AFTER_EPOCHS epochs

Each finding is one warning line when it happens, an entry of `health` in its epoch's row (metrics.jsonl and the
checkpoint, so a resumed run keeps it) and of `health.findings` in summary.json: what, when (epoch, step), the
numbers and the key to change. HEALTH.STOP_ON turns findings into a stop (a MakdError: one line, exit code 2), for
job arrays that should not spend their time on a dead run. Under DDP the measured numbers are summed over the
processes, so every process decides the same.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from makd.config.defaults import HEALTH_CHECKS
from makd.engine.distributed import DistInfo, all_reduce_sum
from makd.errors import MakdError

ROW_FINDINGS = "health"  # key of an epoch row: the findings of that epoch (absent when there are none)
ROW_FIRST_STEPS = "health_first_steps"  # key of the row of the epoch holding the measured first steps


class HealthStopError(MakdError):
    """A training-health finding that HEALTH.STOP_ON names: the run stops (exit code 2)."""


@dataclass
class Finding:
    """One thing a check found: `check` (a name of HEALTH_CHECKS), when, the numbers, and what to change."""

    check: str
    epoch: int  # 1-based epoch during (first steps) or after which it was found
    message: str  # the warning line, without the "[makd] warning: health:" prefix
    numbers: dict[str, float] = field(default_factory=dict)
    step: int | None = None  # the optimizer step (0-based) of a first-steps finding
    term: str = ""  # the loss term it names (gradient_share)
    key: str = ""  # the config key to change

    def __post_init__(self) -> None:
        if self.check not in HEALTH_CHECKS:  # the names HEALTH.STOP_ON accepts
            raise ValueError(f"unknown training-health check {self.check!r}")

    @property
    def identity(self) -> tuple[str, str]:
        return (self.check, self.term)


def findings_of(history: Iterable[dict]) -> list[dict]:
    """Every finding recorded in the rows of a run's history (metrics.jsonl, a checkpoint), in order."""
    return [finding for row in history for finding in row.get(ROW_FINDINGS, [])]


def config_value(cfg, key: str) -> Any:
    """The value of dotted `key` in cfg ("LaViD.LAMBDA"), or None when the tree has no such key."""
    node = cfg
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return None
        node = node[part]
    return node


def label_entropy(counts: Iterable[int]) -> float:
    """Entropy (nats) of the label distribution with these class counts: the class loss of a constant prediction
    of the label prior, the best a student that ignores the images can do (ln C when the classes are balanced)."""
    counts = [c for c in counts if c > 0]
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts)


def chance_top1(largest_share: float, samples: float) -> float:
    """Highest training top-1 (%) still at chance: predicting the largest class, + 3 binomial standard errors."""
    p = largest_share
    return 100.0 * (p + 3.0 * math.sqrt(p * (1.0 - p) / max(samples, 1.0)))


def gradient_ratio(term_norm: float, class_norm: float) -> float:
    """A term's gradient norm over the class term's (infinite when the class term has no gradient)."""
    return term_norm / class_norm if class_norm > 0 else math.inf


def _finite(numbers: dict[str, float]) -> dict[str, float | None]:
    """Strict-JSON numbers: NaN and infinity become None (summary.json and metrics.jsonl allow neither)."""
    return {k: v if math.isfinite(v) else None for k, v in numbers.items()}


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def zero_positives_finding(epoch: int, counts: dict[str, float]) -> Finding | None:
    """A detection epoch whose box head sampled no positive proposal (`counts`: the task's health counts summed over
    the epoch). The readers refuse a training file without a usable box; this catches what still gets through."""
    if counts.get("positive_samples", 1.0) != 0:
        return None
    return Finding(
        "zero_positives",
        epoch,
        f"in epoch {epoch} the box head sampled no positive proposal over {counts.get('images', 0):.0f} training "
        f"images ({counts.get('gt_boxes', 0):.0f} ground-truth boxes): no box reaches training; check "
        "DETECTION.TRAIN_JSON (image ids, category ids, box coordinates in pixels)",
        {"positive_samples": 0.0, "gt_boxes": counts.get("gt_boxes", 0.0)},
        key="DETECTION.TRAIN_JSON",
    )


def map_zero_finding(epoch: int, rows: list[dict], after_epochs: int) -> Finding | None:
    """From epoch `after_epochs` on, a split (val first) whose every evaluated mAP so far is 0: nothing detected."""
    if epoch < after_epochs:
        return None
    for split in ("val", "test"):
        values = [r[f"{split}_map"] for r in rows if f"{split}_map" in r]
        if values and max(values) == 0.0:
            return Finding(
                "map_zero",
                epoch,
                f"after epoch {epoch} the {split} mAP is still 0 at every evaluation ({len(values)}): the detector "
                "finds no box; check the training boxes and categories, and SOLVER.LR",
                {f"{split}_map": 0.0, "evaluations": float(len(values))},
                key="SOLVER.LR",
            )
    return None


def _norm(grads: Iterable[torch.Tensor | None]) -> float:
    return math.sqrt(sum(float(g.detach().float().pow(2).sum()) for g in grads if g is not None))


class TrainingHealth:
    """The checks of one run. `task` provides (makd.engine.tasks.Task): class_terms(), own_losses,
    shared_parameters(), health_counts(outputs, batch) and chance_levels(); `task.model` its `loss_weight_keys`."""

    def __init__(self, cfg, task, info: DistInfo, device: torch.device, history: list[dict]) -> None:
        self.cfg, self.task, self.info, self.device = cfg, task, info, device
        h = cfg.HEALTH
        self.enabled = bool(h.ENABLED)
        self.grad_steps = set(h.GRAD_STEPS) if self.enabled else set()
        self.weight_keys: dict[str, str] = dict(getattr(task.model, "loss_weight_keys", {}) or {})
        self.earlier = findings_of(history)  # recorded before a resume
        self.known = {(f["check"], f.get("term", "")) for f in self.earlier}
        self.pending: list[Finding] = []  # found during the current epoch, not yet in a row
        self.first_steps: list[dict] = []  # measured steps of the current epoch
        self.counts: dict[str, float] = {}  # the task's health counts summed over the current epoch
        self.peak_lr = max([row.get("lr", 0.0) for row in history] + [0.0])
        self._shared: list[torch.nn.Parameter] | None = None
        self.printed = any(ROW_FIRST_STEPS in row for row in history)  # the first-steps line (once per run)
        self.measure_seconds = self.measure_cpu_seconds = 0.0  # of the extra backward passes, in this process
        # the method's own stability numbers (Distiller.first_step_notes), taken once per run (a resume keeps them)
        earlier_notes = [m["notes"] for row in history for m in row.get(ROW_FIRST_STEPS, []) if "notes" in m]
        self.notes: dict | None = earlier_notes[0] if earlier_notes else None

    # ------------------------------------------------------------------------------------------- each step
    def step(self, step: int, epoch: int, outputs, losses: dict[str, torch.Tensor], batch) -> None:
        """Before the backward pass of optimizer step `step` (0-based) in epoch `epoch` (0-based): count, and at
        the steps of HEALTH.GRAD_STEPS measure each term's size and gradient share."""
        if not self.enabled:
            return
        for key, value in self.task.health_counts(outputs, batch).items():
            self.counts[key] = self.counts.get(key, 0.0) + float(value)
        if step in self.grad_steps:
            self._measure(step, epoch, losses)

    def _shared_parameters(self) -> list[torch.nn.Parameter]:
        if self._shared is None:
            self._shared = [p for p in self.task.shared_parameters() if p.requires_grad]
        return self._shared

    def _measure(self, step: int, epoch: int, losses: dict[str, torch.Tensor]) -> None:
        class_terms = [n for n in self.task.class_terms() if n in losses]
        params = self._shared_parameters()
        if not class_terms or not params:
            return
        label = "+".join(class_terms)  # the class signal: the labels' term, and a CNN teacher's class terms
        names = list(losses)
        others = [n for n in names if n not in class_terms and n not in self.task.own_losses]
        measured = {label: sum(losses[n] for n in class_terms), **{n: losses[n] for n in others}}
        wall, cpu = time.perf_counter(), time.process_time()
        # one backward pass per measured term, through the graph the real backward pass uses next (kept)
        squares = [
            _norm(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)) ** 2
            for loss in measured.values()
        ]
        # what measuring costs; kept out of the rows, which a resumed run must reproduce exactly
        self.measure_seconds += time.perf_counter() - wall
        self.measure_cpu_seconds += time.process_time() - cpu
        values = [float(losses[n].detach()) for n in names]
        totals = all_reduce_sum(values + squares, self.device)  # DDP: every process decides on the same numbers
        world = self.info.world_size
        value = {n: v / world for n, v in zip(names, totals[: len(names)])}
        value[label] = sum(value[n] for n in class_terms)
        grad = {n: math.sqrt(s / world) for n, s in zip(measured, totals[len(names) :])}
        record = {"step": step, "class_terms": label, "loss": _finite(value), "grad_norm": _finite(grad)}
        notes = getattr(self.task.model, "first_step_notes", None)
        # once, at the first measured step; SGD only (its divergence limit is what the notes compare with)
        if callable(notes) and self.notes is None and self.cfg.SOLVER.TYPE.lower() == "sgd":
            self.notes = notes(self.cfg.SOLVER.LR, self.cfg.SOLVER.MOMENTUM)
            numbers = {k: v for k, v in self.notes.items() if k != "stable_below"}
            record["notes"] = {**_finite(numbers), "stable_below": _finite(self.notes.get("stable_below", {}))}
        self.first_steps.append(record)
        for term in others:
            ratio = gradient_ratio(grad[term], grad[label])
            if ratio > self.cfg.HEALTH.GRAD_FACTOR:
                self._gradient_share(step, epoch, term, label, ratio, value, grad)

    def _gradient_share(
        self, step: int, epoch: int, term: str, label: str, ratio: float, value: dict, grad: dict
    ) -> None:
        key = self.weight_keys.get(term, "")
        weight = f"lower {key} (now {config_value(self.cfg, key)}) or SOLVER.LR" if key else "lower its weight"
        bound, now = (self.notes or {}).get("stable_below", {}).get(key), config_value(self.cfg, key)
        if bound is not None and isinstance(now, (int, float)) and now > bound:  # the method's own stability limit
            weight += f"; at SOLVER.LR {self.cfg.SOLVER.LR:g} it trains below about {bound:.3g}"
        times = f"{ratio:.1f}x the class terms'" if math.isfinite(ratio) else "while the class terms have none"
        finding = Finding(
            "gradient_share",
            epoch + 1,
            f"step {step}: {term} ({value[term]:.4g}) has a gradient on the shared layers {times} ({label} "
            f"{value[label]:.4g}), above HEALTH.GRAD_FACTOR {self.cfg.HEALTH.GRAD_FACTOR:g}: it can swamp the "
            f"class loss; {weight}",
            _finite(
                {
                    "ratio": ratio,  # None (JSON null) when the class terms have no gradient
                    "grad_norm": grad[term],
                    "class_grad_norm": grad[label],
                    "loss": value[term],
                    "class_loss": value[label],
                }
            ),
            step=step,
            term=term,
            key=key,
        )
        if self._add(finding):
            self._warn(finding)
            self._stop_if_named(finding, during_epoch=True)

    # ------------------------------------------------------------------------------------------ each epoch
    def end_of_epoch(self, row: dict[str, Any], history: list[dict]) -> None:
        """After the epoch's row is complete (training stats and any evaluation), before it is saved and appended
        to `history` (the rows of the epochs before): run the epoch checks and put this epoch's findings and
        measured first steps into the row."""
        if not self.enabled:
            return
        rows = [*history, row]
        keys = sorted(self.counts)
        counts = dict(zip(keys, all_reduce_sum([self.counts[k] for k in keys], self.device)))
        self.counts = {}
        epoch = int(row["epoch"])
        self.peak_lr = max(self.peak_lr, float(row.get("lr", 0.0)))
        self._class_checks(epoch, row, counts)
        self._detection_checks(epoch, rows, counts)
        self._flat_check(epoch, rows)
        if self.first_steps:
            row[ROW_FIRST_STEPS], self.first_steps = self.first_steps, []
            if self.info.is_main and not self.printed:  # once: later epochs' measured steps only go to the row
                print(f"[makd] health: {first_steps_line(row[ROW_FIRST_STEPS])}", flush=True)
            self.printed = True
        if self.pending:
            row[ROW_FINDINGS] = [asdict(f) for f in self.pending]

    def _class_checks(self, epoch: int, row: dict, counts: dict[str, float]) -> None:
        chance = self.task.chance_levels()
        samples = counts.get("samples", 0.0)
        if epoch < self.cfg.HEALTH.AFTER_EPOCHS or not chance or samples <= 0:
            return
        loss = counts["class_loss"] / samples
        entropy = chance["class_loss"]
        top1 = 100.0 * counts["correct"] / samples
        limit = chance_top1(chance["largest_share"], samples)
        # On the entropy (a dead student's uniform output sits exactly there) or above it (labels that do not fit the
        # images), with a top-1 at chance. With top-1 above chance the student learns, whatever its loss: copying a
        # teacher's T = 4 logits (KD's 0.9 x KL next to 0.1 x CE) it first climbs above ln C and crosses it coming back.
        at_or_above = loss >= (1.0 - self.cfg.HEALTH.CHANCE_MARGIN) * entropy
        if at_or_above and top1 <= limit:
            self._add(
                Finding(
                    "class_loss_at_chance",
                    epoch,
                    f"after epoch {epoch} the train class loss {loss:.4f} is still at chance ({entropy:.4f} = the "
                    f"entropy of the training labels, ln {chance['num_classes']:.0f} = "
                    f"{math.log(chance['num_classes']):.4f} for balanced classes): the student has learned nothing "
                    f"about the images; {self._remedy()}",
                    {"class_loss": loss, "chance_class_loss": entropy, "ln_C": math.log(chance["num_classes"])},
                    key=self._heaviest_key(),
                )
            )
        if top1 <= limit:
            self._add(
                Finding(
                    "train_top1_at_chance",
                    epoch,
                    f"after epoch {epoch} the training top-1 {top1:.2f} % is not above chance (largest class "
                    f"{100 * chance['largest_share']:.2f} % + 3 standard errors = {limit:.2f} %); {self._remedy()}",
                    {"train_top1": top1, "chance_top1": 100 * chance["largest_share"], "limit": limit},
                    key=self._heaviest_key(),
                )
            )

    def _detection_checks(self, epoch: int, rows: list[dict], counts: dict[str, float]) -> None:
        for finding in (
            zero_positives_finding(epoch, counts),
            map_zero_finding(epoch, rows, self.cfg.HEALTH.AFTER_EPOCHS),
        ):
            if finding is not None:
                self._add(finding)

    def _flat_check(self, epoch: int, rows: list[dict]) -> None:
        window = self.cfg.HEALTH.FLAT_EPOCHS
        rows = rows[-window:]
        if len(rows) < window or epoch < self.cfg.HEALTH.AFTER_EPOCHS:
            return
        losses = [r.get("train_loss") for r in rows]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses):
            return
        if min(r.get("lr", 0.0) for r in rows) < 0.5 * self.peak_lr:
            return  # a decayed schedule: a flat loss is expected
        mean = sum(losses) / len(losses)
        spread = (max(losses) - min(losses)) / abs(mean) if mean else 0.0
        if spread < self.cfg.HEALTH.FLAT_TOLERANCE:
            self._add(
                Finding(
                    "loss_flat",
                    epoch,
                    f"the train loss stopped moving: over epochs {rows[0]['epoch']}-{epoch} it stayed within "
                    f"{100 * spread:.3f} % of {mean:.4f} (HEALTH.FLAT_TOLERANCE {self.cfg.HEALTH.FLAT_TOLERANCE:g}) "
                    f"at learning rate {rows[-1].get('lr', 0.0):.3g}; {self._remedy()}",
                    {"train_loss": mean, "relative_spread": spread, "epochs": float(window)},
                    key=self._heaviest_key(),
                )
            )

    def after_epoch_saved(self) -> None:
        """After the epoch's row is saved and printed: one warning line per new finding; stop when asked."""
        found, self.pending = self.pending, []
        self.earlier += [asdict(f) for f in found]
        for finding in found:
            if finding.step is None:  # first-steps findings were reported when they happened
                self._warn(finding)
        for finding in found:
            self._stop_if_named(finding, during_epoch=False)

    # ---------------------------------------------------------------------------------------- the summary
    def summary(self, history: list[dict]) -> dict[str, Any]:
        """summary.json's `health`: whether the checks ran, every finding, the measured first steps, and what
        measuring cost in the process that wrote the summary (0 when the measured steps ran before a resume)."""
        return {
            "checked": self.enabled,
            "findings": findings_of(history),
            "first_steps": [step for row in history for step in row.get(ROW_FIRST_STEPS, [])],
            "measure_seconds": self.measure_seconds,
            "measure_cpu_seconds": self.measure_cpu_seconds,
        }

    # ------------------------------------------------------------------------------------------- helpers
    def _add(self, finding: Finding) -> bool:
        if finding.identity in self.known:
            return False
        self.known.add(finding.identity)
        self.pending.append(finding)
        return True

    def _warn(self, finding: Finding) -> None:
        if self.info.is_main:
            print(f"[makd] warning: health: {finding.message}", file=sys.stderr, flush=True)

    def _stop_if_named(self, finding: Finding, during_epoch: bool) -> None:
        stop_on = list(self.cfg.HEALTH.STOP_ON)
        if finding.check in stop_on or "any" in stop_on:
            kept = "no checkpoint of this epoch was written" if during_epoch else "the epoch's latest.pth is kept"
            raise HealthStopError(
                f"training-health finding {finding.check} stops the run (HEALTH.STOP_ON {stop_on}): "
                f"{finding.message}; {kept}"
            )

    def _swamping_term(self) -> dict | None:
        """The gradient_share finding with the largest ratio, this run's (resumed ones included), if any."""
        shares = [f for f in self.earlier + [asdict(f) for f in self.pending] if f["check"] == "gradient_share"]
        return max(shares, key=lambda f: _or_inf(f["numbers"]["ratio"])) if shares else None

    def _heaviest_key(self) -> str:
        """The key to change first: the weight of the term that swamped the class term, else the learning rate."""
        swamping = self._swamping_term()
        return swamping["key"] if swamping and swamping["key"] else "SOLVER.LR"

    def _remedy(self) -> str:
        swamping = self._swamping_term()
        if swamping and swamping["key"]:
            return f"lower {swamping['key']} or SOLVER.LR (its term {swamping['term']} swamped the class loss)"
        return "check SOLVER.LR, the loss weights and the data (labels, images)"


def first_steps_line(measured: list[dict]) -> str:
    """One line: each term's size (first and largest over the measured steps) and its largest gradient share."""
    if not measured:
        return "no step measured"
    steps, label = [m["step"] for m in measured], measured[0]["class_terms"]
    parts = []
    for term in measured[0]["loss"]:
        if term == label and "+" in label:
            continue  # the sum of the class terms, listed one by one
        values = [_or_nan(m["loss"][term]) for m in measured]
        text = f"{term} {values[0]:.4g}" + (f" (max {max(values):.4g})" if max(values) > values[0] else "")
        if term != label and term in measured[0]["grad_norm"]:
            norms = [(_or_nan(m["grad_norm"][term]), _or_nan(m["grad_norm"][label])) for m in measured]
            ratios = [r for r in (gradient_ratio(a, b) for a, b in norms) if not math.isnan(r)]
            text += f", gradient up to {max(ratios, default=math.nan):.2f}x {label}'s"
        parts.append(text)
    return f"first steps {steps[0]}-{steps[-1]} ({len(steps)} measured): " + "; ".join(parts)
