"""Fault injection for stage 2: SIGKILL the extraction at random and at chosen points, resume, same bytes.

One driver process imports torch/transformers once, then forks one child per fault; each child runs the real
command (`makd.commands.stage2.main`, loading the tiny model from disk) on the same output with `--views flip` and
`--resume`, and dies from a real SIGKILL (or SIGINT) at its fault:
  - sigint:    Ctrl-C after one more row: exit 130 and the resume hint;
  - mid_row:   halfway through writing a row of the partial file (half a line on disk);
  - rows:      after the partial file holds `k` more rows plus a random delay (several seeds);
  - open_tmp:  when the temp file of the final aspect JSON is created (its sidecar already in place);
  - replace:   just before the flip file's temp file replaces it (the main file already written).
After every fault each file on disk must be readable; a last in-process `--resume` must then give aspect files
byte-identical to an unbroken run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

if __name__ == "__main__":  # run as the fault driver: this checkout's makd, not the installed one, is imported
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mllm_fixtures import questions_file, random_image, tiny_hf_model  # noqa: F401

from makd.formats.aspect_files import read_aspect_file
from makd.formats.files import read_sidecar
from makd.mllm.partial_rows import partial_path, read_partial

SEEDS = (0, 1, 2)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _install_fault(fault: dict, output: Path) -> None:
    """Arrange for this (child) process to be killed at `fault`."""
    kind = fault["kind"]
    partial = partial_path(output)
    if kind in ("rows", "sigint"):
        start = _lines(partial)
        rows, delay = fault.get("rows", 1), fault.get("delay", 0.0)
        sig = signal.SIGKILL if kind == "rows" else signal.SIGINT

        def watch() -> None:
            while _lines(partial) < max(start, 1) + rows:
                time.sleep(0.002)
            time.sleep(delay)
            os.kill(os.getpid(), sig)

        threading.Thread(target=watch, daemon=True).start()
    elif kind == "mid_row":
        from makd.mllm.partial_rows import PartialWriter

        calls = {"n": 0}
        original = PartialWriter._write

        def cut(self, record):  # noqa: ANN001
            calls["n"] += 1
            if calls["n"] < fault["row"]:
                return original(self, record)
            line = json.dumps(record) + "\n"
            self._fh.write(line[: len(line) // 2])
            self._fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        PartialWriter._write = cut
    elif kind in ("open_tmp", "replace"):
        name = fault["name"]

        def hook(event: str, args: tuple) -> None:
            if kind == "open_tmp" and event == "open" and isinstance(args[0], str):
                base = os.path.basename(args[0])
                if base.startswith(f".{name}.") and base.endswith(".tmp") and ".meta.json." not in base:
                    os.kill(os.getpid(), signal.SIGKILL)
            if kind == "replace" and event == "os.rename" and os.path.basename(str(args[1])) == name:
                os.kill(os.getpid(), signal.SIGKILL)

        sys.addaudithook(hook)
    else:
        raise AssertionError(kind)


def drive(argv: list[str], faults: list[dict], output: Path, logs: Path) -> list[dict]:
    """Run the command once per fault in a forked child; returns how each child ended."""
    from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: F401

    import makd.commands.stage2 as cli
    import makd.mllm.inprocess_scorer  # noqa: F401  (the heavy imports happen once, before any fork)
    import makd.mllm.model_loading  # noqa: F401

    ended = []
    for number, fault in enumerate(faults):
        pid = os.fork()
        if pid == 0:  # the child: stderr to a file, the fault armed, the real command
            fd = os.open(logs / f"{number}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            _install_fault(fault, output)
            code = cli.main(argv)
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        ended.append({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.WEXITSTATUS(status)})
    return ended


def _check_every_file_is_readable(output: Path, flip: Path) -> None:
    for path in (output, flip):
        if partial_path(path).exists():
            read_partial(partial_path(path))  # at most a cut last line, which reading drops
        if path.exists():
            read_aspect_file(path)
            read_sidecar(path)


def test_killed_anywhere_resumes_to_the_same_bytes(tiny_hf_model, questions_file, tmp_path):  # noqa: F811
    from makd.commands.stage2 import main

    root = tmp_path / "images"
    for i in range(10):
        path = root / "ab"[i % 2] / f"im{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(120 + 9 * i, 90, seed=100 + i).save(path)
    common = ["--model", str(tiny_hf_model), "--questions", str(questions_file), "--images", str(root),
              "--max-tiles", "2", "--batch-size", "3", "--dtype", "float32", "--device", "cpu", "--no-progress",
              "--views", "flip"]  # fmt: skip
    unbroken = tmp_path / "unbroken.json"
    assert main([*common, "--output", str(unbroken)]) == 0

    output, flip = tmp_path / "aspects.json", tmp_path / "aspects.flip.json"
    # Faults that need rows still to do come first; 10 images leave enough for all of them.
    faults = [{"kind": "sigint", "rows": 1}, {"kind": "mid_row", "row": 2}]
    for seed in SEEDS:  # random points: after 0-2 more rows, plus 0-40 ms
        rng = random.Random(seed)
        faults.append({"kind": "rows", "rows": rng.randint(0, 2), "delay": rng.uniform(0.0, 0.04)})
    faults += [{"kind": "open_tmp", "name": output.name}, {"kind": "replace", "name": flip.name}]
    logs = tmp_path / "logs"
    logs.mkdir()
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"argv": [*common, "--output", str(output), "--resume"], "faults": faults,
                                "output": str(output), "logs": str(logs)}))  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, __file__, str(plan)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ended = json.loads(done.stdout.strip().splitlines()[-1])
    # Every fault struck: SIGKILL (9) for all but Ctrl-C, which exits 130 with the resume hint.
    assert [e.get("signal") or e.get("exit") for e in ended] == [130] + [9] * (len(faults) - 1), ended
    hint = (logs / "0.err").read_text().strip().splitlines()[-1]
    kept = f"interrupted; finished rows are kept in {partial_path(output)}; "
    assert hint == kept + "rerun the same command to continue from there"
    assert output.exists() and not flip.exists()  # the last kill came between the main file and the flip file
    _check_every_file_is_readable(output, flip)

    assert main([*common, "--output", str(output), "--resume"]) == 0
    assert output.read_bytes() == unbroken.read_bytes()
    assert flip.read_bytes() == (tmp_path / "unbroken.flip.json").read_bytes()
    assert not partial_path(output).exists() and not partial_path(flip).exists()
    assert read_sidecar(flip)["view"] == "hflip" and read_sidecar(flip)["resumed_rows"] == 10


if __name__ == "__main__":  # the fault driver (see drive)
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(drive(spec["argv"], spec["faults"], Path(spec["output"]), Path(spec["logs"]))))
