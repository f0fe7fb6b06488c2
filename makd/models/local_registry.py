"""The registry of students written in this package (MobileNetV1 and the 32-px CIFAR family).

Each entry is a builder `(num_classes: int, in_chans: int) -> nn.Module`; the family modules register
themselves on import, and `makd.models.names` imports them so the registry is always complete.
"""

from makd.registry import Registry

LOCAL_STUDENTS: Registry = Registry("student")
