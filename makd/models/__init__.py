"""Stage-3 students: any timm / torchvision classifier, MobileNetV1 or a 32-px CIFAR net, head widened to C + Q."""

from makd.models.errors import StudentError
from makd.models.factory import build_student
from makd.models.heads import check_head, classifier_layer, classifier_name
from makd.models.local_registry import LOCAL_STUDENTS
from makd.models.names import INPUT_FAMILIES, available_students, input_family_of, resolve_student_name
from makd.models.pretrained import StudentWeights, load_student_weights, read_state_dict

__all__ = [
    "INPUT_FAMILIES",
    "LOCAL_STUDENTS",
    "StudentError",
    "StudentWeights",
    "available_students",
    "build_student",
    "check_head",
    "classifier_layer",
    "classifier_name",
    "input_family_of",
    "load_student_weights",
    "read_state_dict",
    "resolve_student_name",
]
