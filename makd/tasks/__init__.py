"""The tasks of the trainer by TASK value. Every module of this package is imported here, so each registers its Task
subclass in makd.engine.tasks.TASKS; `import makd.tasks` before training (the training commands do).

Adding a task is one new module (a registered Task subclass) plus its tests, and its TASK value and key group in
makd/config/defaults.py (the config tree holds every key); nothing else lists tasks.
"""

from __future__ import annotations

import importlib
import pkgutil

from makd.engine.tasks import TASKS, Task

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Task"]
