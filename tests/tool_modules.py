"""The commands of tools/ loaded from their files, as a user runs them (tools/ holds scripts, not a package)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str) -> ModuleType:
    """tools/<name>.py, executed afresh as module `tool_<name>`.

    Registered in sys.modules before it runs: dataclasses defined in a tool look their module up there.
    """
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_on_two_processes(tool: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    """tools/<tool>.py under torchrun (`python -m torch.distributed.run --standalone --nproc_per_node 2`): a real
    2-process gloo group on the CPU, one thread each, importing this checkout's makd."""
    return run_under_torchrun(tool, args, timeout, processes=2)


def run_under_torchrun(tool: str, args: Sequence[str], timeout: float, processes: int) -> subprocess.CompletedProcess:
    """tools/<tool>.py under torchrun with `processes` processes (one thread each, this checkout's makd)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TOOLS.parent)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               str(TOOLS / f"{tool}.py"), *map(str, args)]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def run_tool(tool: str, args: Sequence[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """tools/<tool>.py in a fresh Python process, as a user runs it (this checkout's makd)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TOOLS.parent), **(env or {})}
    command = [sys.executable, str(TOOLS / f"{tool}.py"), *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
