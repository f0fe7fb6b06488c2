"""Where a table was made: the date, the checkout's commit, the machine (CPU model, cores) and the library versions.

A printed number is reproducible only with these beside it: another commit changes the code, another CPU the
floating-point kernels, another thread count the order of the sums.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class Provenance:
    date: str  # ISO date, local time
    commit: str  # short hash, "+ local changes" when the work tree differs; "unknown" outside a git checkout
    cpu_model: str
    cores: int
    versions: str  # "python 3.12.3, torch 2.x"

    def line(self) -> str:
        return f"{self.date}, commit {self.commit}, {self.cpu_model} ({self.cores} cores), {self.versions}"


def git_commit(repo: str | os.PathLike) -> str:
    """Short hash of HEAD in `repo`, with " + local changes" when tracked files differ from it; "unknown" when
    `repo` is no git checkout or git is missing."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=30
        )
        if head.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    dirty = status.returncode != 0 or bool(status.stdout.strip())
    return head.stdout.strip() + (" + local changes" if dirty else "")


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere what the platform module says)."""
    try:
        for line in Path(cpuinfo).read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(repo: str | os.PathLike) -> Provenance:
    return Provenance(
        date=datetime.date.today().isoformat(),
        commit=git_commit(repo),
        cpu_model=cpu_model(),
        cores=usable_cores(),
        versions=f"python {platform.python_version()}, torch {_version('torch')}",
    )
