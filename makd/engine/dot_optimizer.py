"""DOT, the distillation-oriented trainer (Zhao et al., ICCV 2023), as an optimizer: SGD whose momentum is split
between the task loss and the distillation losses, so the distillation gradients keep a longer memory.

Each parameter keeps two momentum buffers: v_task = (mu - delta) v_task + g_task and v_kd = (mu + delta) v_kd + g_kd,
and moves by -lr (v_task + v_kd) (mu = SOLVER.MOMENTUM, delta = SOLVER.DOT.DELTA). The task gradient is that of
"loss_ce", the distillation gradient that of every other loss term of the method (KD's loss_kd, a feature term,
MaKD's loss_aspect, ...); `backward(losses)` computes the two apart. Weight decay joins the task gradient. A
parameter that only one of the two reaches (an adaptor, or a layer past a feature method's tap) keeps plain SGD
momentum mu for that gradient, as mdistiller's implementation does (the paper speaks of parameters both reach).
The first step of a buffer starts it at the gradient, as torch's SGD. Both buffers are optimizer state: in every
checkpoint, so --resume continues exactly. With delta 0 the update is SGD's on the summed loss (tested).
"""

from __future__ import annotations

import torch

TASK_LOSS = "loss_ce"  # the term whose gradient is the task gradient; every other term is distillation


class DistillationOrientedSGD(torch.optim.Optimizer):
    """SGD with a task momentum (mu - delta) and a distillation momentum (mu + delta); one parameter group."""

    def __init__(self, params, lr: float, momentum: float, delta: float, weight_decay: float = 0.0) -> None:
        if not 0.0 <= delta <= momentum or momentum + delta >= 1.0:
            raise ValueError(f"DOT needs 0 <= delta <= momentum and momentum + delta < 1, got {momentum}, {delta}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "delta": delta, "weight_decay": weight_decay})
        if len(self.param_groups) != 1:
            raise ValueError("DistillationOrientedSGD takes one parameter group")
        self._distillation_grads: dict[torch.Tensor, torch.Tensor] = {}  # transient: set by backward, used by step

    def backward(self, losses: dict[str, torch.Tensor]) -> None:
        """Gradients of the task loss (left in .grad) and of the sum of the other terms (kept aside), apart."""
        if TASK_LOSS not in losses:
            raise ValueError(f"DOT needs the task loss {TASK_LOSS!r}; the method gave {sorted(losses)}")
        distillation = [value for key, value in losses.items() if key != TASK_LOSS]
        if not distillation:
            raise ValueError("DOT needs at least one distillation term besides loss_ce (SOLVER.TRAINER base trains CE)")
        params = self.param_groups[0]["params"]
        self.zero_grad(set_to_none=True)
        sum(distillation).backward(retain_graph=True)
        self._distillation_grads = {p: p.grad for p in params if p.grad is not None}
        self.zero_grad(set_to_none=True)
        losses[TASK_LOSS].backward()

    @staticmethod
    def _advance(state: dict, key: str, gradient: torch.Tensor, momentum: float) -> torch.Tensor:
        buffer = state.get(key)
        if buffer is None:
            buffer = state[key] = gradient.detach().clone()
        else:
            buffer.mul_(momentum).add_(gradient)
        return buffer

    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0]
        lr, mu, delta, decay = group["lr"], group["momentum"], group["delta"], group["weight_decay"]
        for p in group["params"]:
            task, distillation = p.grad, self._distillation_grads.get(p)
            if task is None and distillation is None:
                continue
            both = task is not None and distillation is not None
            state = self.state[p]
            update = torch.zeros_like(p)
            if task is not None:
                task = task.add(p, alpha=decay) if decay else task
                update += self._advance(state, "task_momentum", task, mu - delta if both else mu)
            if distillation is not None:
                if task is None and decay:
                    distillation = distillation.add(p, alpha=decay)
                update += self._advance(state, "distillation_momentum", distillation, mu + delta if both else mu)
            p.add_(update, alpha=-lr)
        self._distillation_grads = {}
        return None
