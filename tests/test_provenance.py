"""Where a table was made (makd.analysis.provenance): the commit of a real git checkout (and whether its tracked
files changed), the CPU model from a cpuinfo file, the usable cores."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from makd.analysis.provenance import cpu_model, git_commit, provenance, usable_cores


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_commit_of_a_checkout_and_its_local_changes(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (repo / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "--short", "HEAD").strip()
    assert git_commit(repo) == head
    (repo / "untracked.txt").write_text("not part of the checkout's code\n")
    assert git_commit(repo) == head  # untracked files (outputs, data) do not change the code
    (repo / "a.txt").write_text("two\n")
    assert git_commit(repo) == f"{head} + local changes"
    assert git_commit(tmp_path / "not_a_repo_here") == "unknown"


def test_cpu_model_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)   Gold 6226R CPU @ 2.90GHz\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6226R CPU @ 2.90GHz\n"
    )
    assert cpu_model(cpuinfo) == "Intel(R) Xeon(R) Gold 6226R CPU @ 2.90GHz"
    fallback = cpu_model(tmp_path / "missing")  # not Linux: what the platform module says, never empty
    assert isinstance(fallback, str) and fallback


def test_provenance_of_this_checkout():
    made = provenance(os.path.dirname(os.path.dirname(__file__)))
    assert made.cores == usable_cores() >= 1
    assert len(made.date) == 10 and made.date[4] == "-" and "torch " in made.versions
    assert made.line().startswith(f"{made.date}, commit {made.commit}, {made.cpu_model} ({made.cores} cores)")
