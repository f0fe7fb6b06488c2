"""One prepared check of makd on a GPU, for the few minutes a GPU machine is lent (docs/gpu.md).

    python tools/gpu_check.py --out DIR [--internvl-code DIR] [--budget-s 450] [--sections env,stage2,...]
    python tools/gpu_check.py --smoke --out DIR              # every section on the CPU at tiny sizes, in seconds
    python tools/gpu_check.py --prepare .gpu [--internvl-repo GIT_DIR]   # here: the wheels and remote code to carry

Sections, in order: `env` (card, driver, versions, the bf16 matmul rate and copy bandwidth that are the yardsticks),
`cuda_tests` (the suite's CUDA-marked tests), `stage2` (scoring at the real teachers' geometry,
tools/gpu_check_stage2.py), `stage3` (the training input pipeline and step, tools/gpu_check_stage3.py). Each runs in
a process of its own, so a crash, an out-of-memory or a hang loses that section only, under a time limit cut from
one global budget; a section or case that would not fit in what is left is skipped, and the report says so.
Results are written after every section (a section writes its own after every case), as `gpu_check.json` (all
figures) and `gpu_check.md` (the tables), plus `gpu_check_profile.txt` (the profiler table of stage 2's largest
case): three files, as few as the lending machine returns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.append(str(ROOT / "tools"))  # the section modules beside this file (last: tools/ shadows nothing)

SCHEMA = 1
SECTIONS = ("env", "cuda_tests", "stage2", "stage3")
# Seconds a section needs at least (else it is skipped) and at most (its process is stopped there), full / smoke.
# Full: about 7.5 minutes in all on one H100, inside the 10 minutes a lent machine runs one command.
SECTION_SECONDS = {
    "env": ((15, 60), (5, 60)),
    "cuda_tests": ((60, 240), (5, 120)),
    "stage2": ((40, 170), (5, 120)),
    "stage3": ((40, 170), (5, 120)),
}
DEFAULT_BUDGET_S = 450
REPORT, MARKDOWN, PROFILE = "gpu_check.json", "gpu_check.md", "gpu_check_profile.txt"


# ---- the parent: sections in processes of their own, under one budget -------------------------------------------


def run_all(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    deadline = started + args.budget_s
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "command": " ".join(["python", "tools/gpu_check.py", *args.argv]),
        "smoke": args.smoke,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "budget_s": args.budget_s,
        "sections": {},
    }
    names = args.sections.split(",") if args.sections else list(SECTIONS)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        for name in names:
            minimum, cap = SECTION_SECONDS[name][1 if args.smoke else 0]
            left = deadline - time.monotonic()
            if left < minimum:
                entry = {"status": "skipped", "reason": f"budget: {left:.0f} s left, it needs at least {minimum} s"}
            else:
                entry = run_section_process(name, args, Path(scratch), min(cap, left), out / REPORT)
            report["sections"][name] = entry
            report["seconds"] = round(time.monotonic() - started, 1)
            write_report(out, report)
            print(f"[gpu_check] {name}: {entry['status']} ({entry.get('seconds', 0)} s)"
                  f"{' - ' + entry['reason'] if entry.get('reason') else ''}", flush=True)  # fmt: skip
    print(markdown(report), flush=True)
    return 0 if all(s["status"] == "ok" for s in report["sections"].values()) else 1


def run_section_process(name: str, args, scratch: Path, limit: float, report_path: Path) -> dict[str, Any]:
    """Run one section in a child process for at most `limit` seconds; its results even when it fails or is
    stopped (the child writes them after every case)."""
    result_file = scratch / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), *args.argv, "--run-section", name,
               "--section-out", str(result_file), "--section-seconds", f"{limit:.0f}",
               "--report-so-far", str(report_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env["PYTHONUNBUFFERED"] = "1"
    if args.smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # --smoke runs on the CPU even on a GPU machine
    if args.internvl_code:
        env["MAKD_INTERNVL_CODE"] = str(Path(args.internvl_code).resolve())
    tail: deque[str] = deque(maxlen=40)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    child = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True, errors="replace")

    def forward() -> None:  # the child's log, shown live and kept for the report
        for line in child.stderr:
            sys.stderr.write(f"  [{name}] {line}")
            tail.append(line.rstrip())

    reader = threading.Thread(target=forward, daemon=True)
    reader.start()
    try:
        code = child.wait(timeout=limit)
        status = "ok" if code == 0 else "failed"
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        code, status = None, "timeout"
    reader.join(timeout=5)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # the child and its own children
    seconds = round(time.monotonic() - started, 1)
    entry: dict[str, Any] = {"status": status, "seconds": seconds, "cpu_seconds": round(cpu, 1)}
    if result_file.exists():
        try:
            entry["result"] = json.loads(result_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            entry["result_unreadable"] = True
    if status == "timeout":
        entry["reason"] = f"stopped at its limit of {limit:.0f} s; the cases finished before are kept"
    elif status == "failed":
        entry["reason"] = f"exit status {code}"
        entry["log_tail"] = list(tail)[-25:]
        verdict = (entry.get("result") or {}).get("failure")
        if verdict:
            entry["reason"] += f": {verdict}"
    return entry


def write_report(out: Path, report: dict) -> None:
    from makd.atomic_files import atomic_write_json, atomic_write_text

    stage2 = report["sections"].get("stage2", {}).get("result") or {}
    table = stage2.pop("profile_table", None)
    if table:
        atomic_write_text(out / PROFILE, table)
        stage2["profile_table_file"] = PROFILE
    atomic_write_json(out / REPORT, report)
    atomic_write_text(out / MARKDOWN, markdown(report))


# ---- the child: one section ---------------------------------------------------------------------------------------


class Recorder:
    """A section's results, rewritten to its file after every change, and its time limit."""

    def __init__(self, path: Path, seconds: float, smoke: bool) -> None:
        self.path, self.deadline, self.smoke = path, time.monotonic() + seconds, smoke
        self.data: dict[str, Any] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, seconds: float) -> bool:
        """Whether a step of about `seconds` fits in what is left (with a margin for writing up)."""
        return self.left() > seconds + 5

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def append(self, key: str, value: Any) -> None:
        self.data.setdefault(key, []).append(value)
        self.save()

    def skip(self, what: str, needs: float) -> None:
        self.append("skipped", f"{what}: {self.left():.0f} s left, needs about {needs:.0f} s")

    def save(self) -> None:
        from makd.atomic_files import atomic_write_json

        atomic_write_json(self.path, self.data)


def run_section(args) -> int:
    import torch

    # --smoke: one thread, as everything on a shared CI machine; else the GPU machine's cores (loader threads apart)
    torch.set_num_threads(1 if args.smoke else min(8, os.cpu_count() or 1))
    record = Recorder(Path(args.section_out), float(args.section_seconds), args.smoke)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record.set("device", str(device))
    prior = json.loads(Path(args.report_so_far).read_text()) if Path(args.report_so_far).exists() else {}
    try:
        if args.run_section == "env":
            env_section(record, device)
        elif args.run_section == "cuda_tests":
            return cuda_tests_section(record, args)
        elif args.run_section == "stage2":
            import gpu_check_stage2

            gpu_check_stage2.run(record, device, matmul_rate(prior, record, device))
        elif args.run_section == "stage3":
            import gpu_check_stage3

            gpu_check_stage3.run(record, device, students=args.stage3_students)
    except Exception as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        record.set("failure", f"{type(err).__name__}: {first}")
        raise
    return 0


def matmul_rate(prior: dict, record: Recorder, device) -> float:
    """The dense matmul TFLOP/s of this run's env section, else measured here (the yardstick of achieved rates)."""
    rate = ((prior.get("sections", {}).get("env") or {}).get("result") or {}).get("matmul_tflops")
    if rate is None:
        rate = measure_matmul(device, record.smoke)
        record.set("matmul_tflops_measured_here", rate)
    return float(rate)


def env_section(record: Recorder, device) -> None:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    for distribution in ("torchvision", "transformers", "timm", "tokenizers", "numpy", "pillow", "pytest-timeout",
                         "nvidia-ml-py"):  # fmt: skip
        info[distribution] = installed_version(distribution)
    for module in ("yacs", "openai", "pycocotools"):  # carried as wheels to the GPU machine: do they import?
        info[f"carried_{module}"] = package_version(module)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({
            "card": props.name,
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "driver": nvidia_smi("driver_version"),
            "clocks_sm_mhz": nvidia_smi("clocks.sm"),
            "bf16_native": torch.cuda.is_bf16_supported(including_emulation=False),
        })  # fmt: skip
    else:
        info["card"] = f"CPU ({platform.processor() or platform.machine()})"
    record.set("info", info)
    record.set("matmul_dtype", "bfloat16" if device.type == "cuda" else "float32")
    record.set("matmul_tflops", measure_matmul(device, record.smoke))
    record.set("copy_gb_per_s", measure_copy(device, record.smoke))


def installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def package_version(module: str) -> str:
    try:
        imported = __import__(module)
    except Exception as err:  # noqa: BLE001 - what is missing is the finding
        return f"missing ({type(err).__name__}: {str(err)[:120]})"
    return str(getattr(imported, "__version__", "?"))


def nvidia_smi(field: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                          text=True, timeout=20)  # fmt: skip
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def time_on_device(run, device, repeats: int, warmup: int = 3) -> float:
    """Median seconds of `run()` (device events on CUDA, the wall clock elsewhere), after `warmup` calls."""
    import statistics

    import torch

    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            begin = time.perf_counter()
            run()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def measure_matmul(device, smoke: bool) -> float:
    """Dense matrix product rate, TFLOP/s: bf16 8192^3 on CUDA, float32 256^3 on the CPU; random data, three input
    pairs in turn (zeros run faster, and one pair could sit in a cache)."""
    import torch
    from gpu_check_stage2 import significant

    n = 256 if device.type != "cuda" or smoke else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pairs = [(torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype))
             for _ in range(3)]  # fmt: skip
    turn = [0]

    def product() -> None:
        a, b = pairs[turn[0] % 3]
        turn[0] += 1
        torch.mm(a, b)

    seconds = time_on_device(product, device, repeats=12)
    return significant(2 * n**3 / seconds / 1e12)


def measure_copy(device, smoke: bool) -> float:
    """Device-to-device copy, GB/s counting bytes read plus bytes written."""
    import torch
    from gpu_check_stage2 import significant

    size = 2**24 if device.type != "cuda" or smoke else 2**30
    source = torch.randint(0, 255, (size,), dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds = time_on_device(lambda: target.copy_(source), device, repeats=10)
    return significant(2 * size / seconds / 1e9)


# ---- cuda_tests: the suite's CUDA-marked tests -----------------------------------------------------------------


class TestRecorder:
    """A pytest plugin that records each test's outcome as it finishes (a hang or kill keeps the ones before)."""

    def __init__(self, record: Recorder) -> None:
        self.record = record

    def pytest_runtest_logreport(self, report) -> None:
        failed_setup = report.when == "setup" and report.outcome != "passed"
        failed_teardown = report.when == "teardown" and report.outcome == "failed"
        if report.when != "call" and not failed_setup and not failed_teardown:
            return
        entry: dict[str, Any] = {"test": report.nodeid, "outcome": report.outcome, "seconds": round(report.duration, 2)}
        if report.when != "call" and report.outcome == "failed":
            entry["outcome"] = "error"
        if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
            entry["reason"] = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.outcome == "failed":
            text = report.longreprtext.strip().splitlines()
            errors = [line for line in text if line.startswith("E ")]  # pytest's lines of the error itself
            entry["reason"] = (errors[-1] if errors else text[-1] if text else "")[:400]
        properties = {k: v for k, v in report.user_properties}
        if properties:
            entry["figures"] = properties
        self.record.append("tests", entry)


CUDA_MARK = re.compile(r"^(pytestmark = .*|\s*@)pytest\.mark\.cuda\b", re.MULTILINE)


def cuda_test_files() -> list[Path]:
    """Every test file that marks tests `cuda`, by a module-level pytestmark or a decorator (collecting only these
    keeps the start-up short; `pytest -m cuda tests` collects the same tests from the whole suite)."""
    return sorted(p for p in (ROOT / "tests").glob("test_*.py") if CUDA_MARK.search(p.read_text(encoding="utf-8")))


def cuda_tests_section(record: Recorder, args) -> int:
    import importlib.util

    import pytest

    files = cuda_test_files()
    options = ["-m", "cuda", "-q", "-p", "no:cacheprovider", "-rN", "--rootdir", str(ROOT), *map(str, files)]
    if importlib.util.find_spec("pytest_timeout") is not None:
        options += ["--timeout", "200"]  # one hung test (an NCCL rendezvous) must not take the others with it
    record.set("files", [str(p.relative_to(ROOT)) for p in files])
    record.set("internvl_code", os.environ.get("MAKD_INTERNVL_CODE") or None)
    code = pytest.main(options, plugins=[TestRecorder(record)])
    tests = record.data.get("tests", [])
    counts = {kind: sum(t["outcome"] == kind for t in tests) for kind in ("passed", "failed", "error", "skipped")}
    record.set("counts", counts)
    record.set("pytest_exit_code", int(code))
    if counts["failed"] or counts["error"]:
        record.set("failure", f"{counts['failed']} failed, {counts['error']} errors")
        return 1
    return 0 if int(code) in (0, 5) else 1


# ---- the report -------------------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    """The tables of docs/gpu.md, filled from the report."""
    sections = report.get("sections", {})
    env = (sections.get("env") or {}).get("result") or {}
    info = env.get("info", {})
    lines = [
        f"# makd GPU check ({'smoke, CPU' if report.get('smoke') else 'full'})",
        "",
        f"{report.get('started', '')}: {info.get('card', '?')}, driver {info.get('driver', '-')}, torch "
        f"{info.get('torch', '?')} (CUDA {info.get('cuda', '-')}), transformers {info.get('transformers', '?')}; "
        f"{report.get('seconds', '?')} s of a {report.get('budget_s')} s budget.",
        "",
        "| section | status | seconds | CPU seconds | note |",
        "|---|---|---|---|---|",
    ]
    for name, entry in sections.items():
        skipped = len((entry.get("result") or {}).get("skipped", []))
        notes = [entry["reason"]] if entry.get("reason") else []
        notes += [f"{skipped} case(s) skipped"] if skipped else []
        cells = [name, entry["status"], entry.get("seconds", "-"), entry.get("cpu_seconds", "-"), "; ".join(notes)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if env:
        lines += ["", f"Yardsticks: {env.get('matmul_dtype')} matmul {env.get('matmul_tflops')} TFLOP/s, device copy "
                      f"{env.get('copy_gb_per_s')} GB/s (read + write)."]  # fmt: skip
    tests = (sections.get("cuda_tests") or {}).get("result") or {}
    if tests.get("tests"):
        counts = tests.get("counts", {})
        lines += ["", "## CUDA-marked tests", "", ", ".join(f"{v} {k}" for k, v in counts.items()), "",
                  "| test | outcome | s | figures / reason |", "|---|---|---|---|"]  # fmt: skip
        for t in tests["tests"]:
            figures = ", ".join(f"{k} {fmt(v)}" for k, v in (t.get("figures") or {}).items())
            cells = [t["test"].split("::")[-1], t["outcome"], t["seconds"], figures or t.get("reason", "")]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    import gpu_check_stage2
    import gpu_check_stage3

    lines += gpu_check_stage2.markdown((sections.get("stage2") or {}).get("result") or {})
    lines += gpu_check_stage3.markdown((sections.get("stage3") or {}).get("result") or {})
    for name, entry in sections.items():
        for skipped in (entry.get("result") or {}).get("skipped", []):
            lines.append(f"- {name} skipped {skipped}")
    return "\n".join(lines) + "\n"


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if value and (abs(value) < 1e-2 or abs(value) >= 1e5) else f"{value:.3g}"
    return str(value)


# ---- --prepare: what the GPU machine lacks, brought from here ---------------------------------------------------

# The Python packages of the lent GPU machines' image ("cuda"), as its documentation lists them (read 2026-11-17):
# everything makd needs that is not among them travels as wheels. Names normalised as in PEP 503.
GPU_IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp
""".split())
GPU_PYTHON = "3.12"
GPU_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux1_x86_64")  # fmt: skip


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    return normalized(re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0])


def carried_requirements(requirements: str) -> list[str]:
    """The lines of requirements.txt that the GPU image does not satisfy by name (comments dropped)."""
    lines = [line.split("#")[0].strip() for line in requirements.splitlines()]
    wanted = [line for line in lines if line and not line.startswith("-")]  # "-r file": the dev list only
    return [line for line in wanted if requirement_name(line) not in GPU_IMAGE_PACKAGES]


def wheel_name(filename: str) -> str:
    return normalized(filename.split("-")[0])


def pip_download_command(requirements: list[str], target: Path) -> list[str]:
    """pip download of `requirements` and everything they need, as binary wheels for the GPU machine's Python."""
    platforms = [option for platform_tag in GPU_PLATFORMS for option in ("--platform", platform_tag)]
    return [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", GPU_PYTHON,
            "--implementation", "cp", *platforms, "-d", str(target), *requirements]  # fmt: skip


def prepare(target: Path, internvl_repo: str | None) -> int:
    """Write `target`/wheels (what makd needs and the GPU image lacks, with their own needs, one version each) and,
    from a git mirror of OpenGVLab/InternVL, `target`/internvl-code (the remote-code files, flattened)."""
    from makd.errors import MakdError

    wheels = target / "wheels"
    with tempfile.TemporaryDirectory(prefix="gpu_wheels_") as downloaded:
        needed = carried_requirements((ROOT / "requirements.txt").read_text(encoding="utf-8"))
        done = subprocess.run(pip_download_command(needed, Path(downloaded)), capture_output=True, text=True)
        if done.returncode != 0:
            raise MakdError(f"pip download failed: {done.stderr.strip().splitlines()[-1:]}")
        if wheels.exists():
            shutil.rmtree(wheels)
        wheels.mkdir(parents=True)
        kept = []
        for wheel in sorted(Path(downloaded).glob("*.whl")):
            if wheel_name(wheel.name) not in GPU_IMAGE_PACKAGES:  # the image's own version stays in charge
                shutil.copy2(wheel, wheels / wheel.name)
                kept.append(wheel.name)
    names = [wheel_name(k) for k in kept]
    if len(set(names)) != len(names):
        raise MakdError(f"two versions of one package among {kept}: pip would refuse to install them together")
    print(f"{len(kept)} wheels in {wheels} ({sum(p.stat().st_size for p in wheels.iterdir()) / 2**20:.1f} MiB):")
    print("\n".join(f"  {k}" for k in kept))
    if internvl_repo:
        from makd.demo.internvl_remote_code import flatten_remote_code

        code = target / "internvl-code"
        flatten_remote_code(internvl_repo, "HEAD", code)
        print(f"InternVL remote code (HEAD) flattened into {code}")
    return 0


# ---- command line -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for gpu_check.json, gpu_check.md, gpu_check_profile.txt")
    parser.add_argument("--smoke", action="store_true", help="every section on the CPU at tiny sizes (CI)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for all sections together (default {DEFAULT_BUDGET_S})")
    parser.add_argument("--sections", default=None, help=f"comma list of {', '.join(SECTIONS)} (default all)")
    parser.add_argument("--internvl-code", default=None,
                        help="folder of the flattened OpenGVLab/InternVL remote-code files (--prepare writes it); "
                        "without it the remote-code CUDA tests skip, unless a mirror is found")
    parser.add_argument("--stage3-students", default=None,
                        help="comma list of students for stage3 (default resnet18,resnet50; smoke resnet8)")
    parser.add_argument("--prepare", default=None, metavar="DIR",
                        help="write DIR/wheels (and DIR/internvl-code with --internvl-repo) to carry to the GPU")
    parser.add_argument("--internvl-repo", default=None, help="--prepare: a git mirror of OpenGVLab/InternVL")
    parser.add_argument("--run-section", choices=SECTIONS, help=argparse.SUPPRESS)  # the parent's child processes
    parser.add_argument("--section-out", help=argparse.SUPPRESS)
    parser.add_argument("--section-seconds", help=argparse.SUPPRESS)
    parser.add_argument("--report-so-far", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = [a for a in argv]
    return args


def main(argv: list[str] | None = None) -> int:
    from makd.errors import MakdError, run_command

    def body(arguments: list[str]) -> int:
        args = parse_args(arguments)
        if args.run_section:
            return run_section(args)
        if args.prepare:
            return prepare(Path(args.prepare), args.internvl_repo)
        if not args.out:
            raise MakdError("--out DIR is required (the folder the report is written to)")
        if args.sections:
            unknown = [s for s in args.sections.split(",") if s not in SECTIONS]
            if unknown:
                raise MakdError(f"--sections: unknown {', '.join(unknown)} (use {', '.join(SECTIONS)})")
        if args.internvl_code and not Path(args.internvl_code).is_dir():
            raise MakdError(f"--internvl-code {args.internvl_code}: no such folder (gpu_check.py --prepare writes it)")
        if args.budget_s <= 0:
            raise MakdError(f"--budget-s must be > 0, got {args.budget_s}")
        return run_all(args)

    return run_command(body, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
