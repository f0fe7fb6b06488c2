"""tools/gpu_check.py on the CPU: --smoke runs every section and writes the report's schema, a failing section is
recorded and the next one runs, the budget skips what would not fit, and --prepare selects (and, where PyPI is
reachable, downloads) exactly the wheels the GPU machine lacks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from mirrors import mirror
from tool_modules import load_tool, run_tool

gpu_check = load_tool("gpu_check")
REPO = Path(__file__).resolve().parents[1]


def report_of(out: Path) -> dict:
    return json.loads((out / "gpu_check.json").read_text())


def test_smoke_runs_every_section_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    done = run_tool("gpu_check", ["--smoke", "--out", out], timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.md", "gpu_check_profile.txt"]
    report = report_of(out)
    assert report["schema"] == 1 and report["smoke"] is True and report["seconds"] <= report["budget_s"]
    sections = report["sections"]
    assert list(sections) == ["env", "cuda_tests", "stage2", "stage3"]
    assert all(s["status"] == "ok" and s["seconds"] > 0 and "result" in s for s in sections.values())

    env = sections["env"]["result"]
    assert env["matmul_tflops"] > 0 and env["copy_gb_per_s"] > 0 and env["info"]["torch"] == torch.__version__
    assert env["info"]["carried_yacs"] and not env["info"]["carried_yacs"].startswith("missing")

    tests = sections["cuda_tests"]["result"]
    names = {t["test"].split("::")[0] for t in tests["tests"]}
    assert names == {"tests/test_cuda_stage2.py", "tests/test_cuda_training.py"}
    assert tests["counts"]["skipped"] == len(tests["tests"]) >= 15  # --smoke hides the GPU: each says why
    assert {t["reason"] for t in tests["tests"]} == {"no CUDA device"}

    stage2 = sections["stage2"]["result"]
    cases = {c["tiles"]: c for c in stage2["cases"]}
    assert sorted(cases) == [1, 3] and stage2["profile_table_file"] == "gpu_check_profile.txt"
    for case in cases.values():
        assert case["packed_attention"] == "split" and case["questions"] == 50
        assert case["best"]["images_per_s"] > 0 and case["official"]["images_per_s"] > 0
        assert case["bound"]["images_per_s"] > 0 and case["tflops_achieved"] > 0
        flops = case["gflop_per_image"]
        assert flops["this"] < flops["bound"] < flops["official"]
        assert set(case["phases_seconds"]) == {"encode", "prefill", "suffixes", "total"}
    assert cases[3]["prefix_tokens"] == cases[1]["prefix_tokens"] + 2 * 256  # two more tiles of 256 tokens
    assert "Self CPU" in (out / "gpu_check_profile.txt").read_text()  # the profiler's table (CPU times here)

    runs = sections["stage3"]["result"]["runs"]
    assert [(r["variant"], r["channels_last"]) for r in runs] == [("base", True), ("channels_last off", False)]
    for run in runs:
        assert run["trainer"]["images_per_s"] > 0 and run["bare_images_per_s"] > 0
        assert run["loader"]["images_per_s"] > 0 and run["verdict"] in ("input-bound", "not input-bound")

    text = (out / "gpu_check.md").read_text()
    for heading in ("| section | status |", "## CUDA-marked tests", "## Stage 2 at real scale", "## Stage 3 input"):
        assert heading in text


def test_a_failing_section_is_recorded_and_the_next_one_runs(tmp_path):
    out = tmp_path / "out"
    args = ["--smoke", "--out", out, "--sections", "stage3,env", "--stage3-students", "nosuchnet"]
    done = run_tool("gpu_check", args, timeout=600)
    assert done.returncode == 1  # not every section passed
    sections = report_of(out)["sections"]
    assert sections["stage3"]["status"] == "failed" and "nosuchnet" in sections["stage3"]["reason"]
    assert sections["stage3"]["log_tail"]  # the child's last lines, for the reader of the report
    assert sections["env"]["status"] == "ok" and sections["env"]["result"]["matmul_tflops"] > 0
    assert "| stage3 | failed |" in (out / "gpu_check.md").read_text()


def test_sections_that_would_not_fit_the_budget_are_skipped_and_say_so(tmp_path):
    out = tmp_path / "out"
    done = run_tool("gpu_check", ["--smoke", "--out", out, "--budget-s", "3"], timeout=120)
    assert done.returncode == 1
    sections = report_of(out)["sections"]
    assert [s["status"] for s in sections.values()] == ["skipped"] * 4
    assert sections["env"]["reason"] == "budget: 3 s left, it needs at least 5 s"


def test_a_section_past_its_limit_is_stopped_and_reported(tmp_path):
    args = gpu_check.parse_args(["--smoke", "--out", str(tmp_path)])
    entry = gpu_check.run_section_process("env", args, tmp_path, 0.5, tmp_path / "none.json")
    assert entry["status"] == "timeout" and entry["seconds"] < 10
    assert entry["reason"].startswith("stopped at its limit of") and entry["reason"].endswith("are kept")


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert gpu_check.main(["--smoke"]) == 2
    assert gpu_check.main(["--out", str(tmp_path), "--sections", "env,stage9"]) == 2
    assert gpu_check.main(["--out", str(tmp_path), "--internvl-code", str(tmp_path / "absent")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "error: --out DIR is required (the folder the report is written to)",
        "error: --sections: unknown stage9 (use env, cuda_tests, stage2, stage3)",
        f"error: --internvl-code {tmp_path / 'absent'}: no such folder (gpu_check.py --prepare writes it)",
    ]


def test_every_cuda_test_file_is_collected_and_marks_its_tests():
    files = gpu_check.cuda_test_files()
    assert [p.name for p in files] == ["test_cuda_stage2.py", "test_cuda_training.py"]
    for path in files:
        assert "pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available()" in path.read_text()


# ---- --prepare --------------------------------------------------------------------------------------------------


def test_the_gpu_machine_is_brought_what_it_lacks_and_nothing_it_has():
    carried = gpu_check.carried_requirements((REPO / "requirements.txt").read_text())
    assert [gpu_check.requirement_name(line) for line in carried] == ["yacs", "openai", "pycocotools"]
    assert gpu_check.requirement_name("Pillow>=10.0  # x") == "pillow" in gpu_check.GPU_IMAGE_PACKAGES
    assert gpu_check.wheel_name("typing_extensions-4.16.0-py3-none-any.whl") == "typing-extensions"
    command = gpu_check.pip_download_command(["yacs>=0.1.8"], Path("d"))
    assert command[command.index("--python-version") + 1] == "3.12" and "--only-binary=:all:" in command
    assert command.count("--platform") == 5 and command[-1] == "yacs>=0.1.8"


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


def requirements_of(wheel: Path) -> list[str]:
    """Names the wheel requires on CPython 3.12 / Linux (extras left out)."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    environment = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                   "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}  # fmt: skip
    names = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.split(":", 1)[1].strip())
            if requirement.marker is None or requirement.marker.evaluate(environment):
                names.append(gpu_check.normalized(requirement.name))
    return names


@pytest.mark.skipif(not pypi_reachable(), reason="PyPI is not reachable from here")
def test_prepare_downloads_wheels_that_install_together_for_the_gpu_python(tmp_path):
    git_dir = mirror("OpenGVLab/InternVL")
    args = ["--prepare", tmp_path / "gpu"] + (["--internvl-repo", git_dir] if git_dir.is_dir() else [])
    done = run_tool("gpu_check", args, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    wheels = sorted((tmp_path / "gpu" / "wheels").glob("*.whl"))
    names = {gpu_check.wheel_name(w.name) for w in wheels}
    assert {"yacs", "openai", "pycocotools"} <= names and not names & gpu_check.GPU_IMAGE_PACKAGES
    assert all(w.name.endswith(("-none-any.whl", "x86_64.whl")) for w in wheels)
    # Everything each carried wheel needs is carried too, or on the GPU machine already.
    for wheel in wheels:
        missing = set(requirements_of(wheel)) - names - gpu_check.GPU_IMAGE_PACKAGES
        assert not missing, (wheel.name, missing)
    # pip installs them together, as the device command does, for the GPU machine's Python (3.12).
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target),
               "--python-version", "3.12", "--only-binary=:all:", "--implementation", "cp",
               *[a for p in gpu_check.GPU_PLATFORMS for a in ("--platform", p)], *map(str, wheels)]  # fmt: skip
    installed = subprocess.run(install, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert (target / "yacs").is_dir() and (target / "openai").is_dir() and list(target.glob("pycocotools/_mask*.so"))
    if git_dir.is_dir():
        from makd.demo.internvl_remote_code import REMOTE_CODE_FILES

        assert sorted(p.name for p in (tmp_path / "gpu" / "internvl-code").iterdir()) == sorted(REMOTE_CODE_FILES)
