"""He initialisation shared by the locally written students (conv fan-out, BN identity, zero Linear bias)."""

from torch import nn


def init_conv_net(model: nn.Module) -> None:
    """Initialise every conv / BN / Linear of `model` in place, the usual recipe for ReLU conv nets."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            # Default (uniform fan-in) weights keep the initial logits small; a zero bias starts unbiased.
            nn.init.zeros_(module.bias)
