"""Find a student's final classifier Linear and prove, at build time, that it really emits C + Q logits.

The check exists because a model can silently ignore `num_classes` (the official MaKD MobileNetV1 always had
1000 outputs): the aspect units would then be read from class logits, or from nothing, without any error.
"""

from __future__ import annotations

import torch
from torch import nn

from makd.models.errors import StudentError, first_line


def classifier_layer(model: nn.Module, label: str = "") -> nn.Linear:
    """The Linear that produces the logits: `model.get_classifier()` (timm, local students) or the last Linear.

    For torchvision classifiers the head is the last Linear registered (resnet `fc`, efficientnet
    `classifier[1]`, vit `heads.head`, ...); a conv head (squeezenet) or a double head (timm distilled
    models) is refused, since MaKD widens exactly one Linear to C + Q outputs. label names the model in errors.
    """
    kind = f"student {label}" if label else type(model).__name__
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        if isinstance(head, nn.Linear):
            return head
        found = type(head).__name__ if isinstance(head, nn.Module) else f"{type(head).__name__} of heads"
        raise StudentError(
            f"{kind}: its classifier is a {found}, not one nn.Linear; MaKD widens one Linear head, pick another model"
        )
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise StudentError(f"{kind}: has no nn.Linear classifier (a conv head?); MaKD needs one, pick another model")
    return linears[-1]


def classifier_name(model: nn.Module) -> str:
    """The dotted module path of `classifier_layer(model)`, e.g. 'fc' or 'classifier.1' (state_dict key prefix)."""
    head = classifier_layer(model)
    for name, module in model.named_modules():
        if module is head:
            return name
    raise StudentError(f"{type(model).__name__}: its classifier is not a submodule of the model")


def check_head(model: nn.Module, num_outputs: int, label: str, input_size: tuple[int, int], in_chans: int = 3) -> None:
    """Raise StudentError unless the head has `num_outputs` outputs AND a dry forward returns [1, num_outputs].

    input_size: (H, W) in pixels of the dry input (zeros, so the global RNG is untouched); run in eval mode
    without gradients, so BatchNorm statistics do not move. The head must be the layer that produced the logits.
    """
    head = classifier_layer(model, label)
    if head.out_features != num_outputs:
        raise StudentError(
            f"student {label}: final Linear has {head.out_features} outputs, expected {num_outputs} (C + Q); "
            "the model ignored num_classes"
        )
    head_outputs: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _module, _inputs, output: head_outputs.append(output))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(torch.zeros(1, in_chans, *input_size))
    except Exception as err:  # a shape / channel error from deep inside the model: say which student and input
        raise StudentError(
            f"student {label}: dry forward on a [1, {in_chans}, {input_size[0]}, {input_size[1]}] input failed "
            f"({first_line(err)})"
        ) from None
    finally:
        hook.remove()
        model.train(was_training)
    if not isinstance(logits, torch.Tensor):
        raise StudentError(f"student {label}: forward returns {type(logits).__name__}, not one logits tensor")
    if tuple(logits.shape) != (1, num_outputs):
        raise StudentError(
            f"student {label}: forward returns shape {list(logits.shape)}, expected [1, {num_outputs}] (C + Q)"
        )
    if not head_outputs or not torch.equal(head_outputs[-1].reshape(logits.shape), logits):
        raise StudentError(
            f"student {label}: the logits do not come from the Linear found as classifier; MaKD cannot widen it"
        )
