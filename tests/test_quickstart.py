"""The README's "Your own images", command by command, from a folder of photo-like images to a study table
(issue 21, item 1).

The commands are read from the README itself, so the test follows what a user reads. Each runs as a user runs it,
in its own process, from the folder that holds `data/mine`. What the test adds is listed in ADDED: short runs
(`--epochs 1 --seeds 0`), stage 1 against a scripted OpenAI-compatible server on 127.0.0.1 (tests/llm_server.py)
instead of OpenAI, and stage 2 with the offline `--model tiny` the README names instead of the GPU model.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from llm_server import ScriptedLLMServer

from makd.demo.photos import write_photo_folders
from makd.formats.aspect_files import read_aspect_file
from makd.formats.questions import read_questions

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Your own images"
REAL_TEACHER = "OpenGVLab/InternVL3-2B-hf"
# Forty yes/no questions that name no class and are no near duplicates of each other (stage 1's screening).
CANDIDATES = [
    "Is the object round?", "Does the object have stripes?", "Is the sky visible?", "Is there grass on the ground?",
    "Does the object cast a shadow?", "Is the object taller than it is wide?", "Are there spots on the surface?",
    "Is the object mostly red?", "Is the object mostly blue?", "Is the object mostly green?",
    "Is the object mostly yellow?", "Does the object have a pointed top?", "Is the background blurry?",
    "Is the horizon near the middle of the picture?", "Does the object touch the edge of the frame?",
    "Is the object in the left half?", "Is the lighting warm?", "Are there clouds?", "Is the ground brown?",
    "Does the object have a stem?", "Is the object symmetric?", "Does the object look soft?",
    "Is the picture dark?", "Does the surface have vertical ridges?", "Is the object floating above the ground?",
    "Does the object have a thin line hanging from it?", "Is the outline curved everywhere?",
    "Are there sharp corners?", "Does the object fill most of the picture?", "Is the object small in the frame?",
    "Is the photo taken outdoors?", "Does the object have a flat base?", "Is the object tilted?",
    "Are there several colours on the object?", "Is there a reflection?", "Is the object glossy?",
    "Does the object have a handle?", "Is the scene foggy?", "Is the object made of fabric?",
    "Does the object have holes?",
]  # fmt: skip


def readme_commands() -> list[list[str]]:
    """The commands of the README's quickstart block, continuations joined, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]
    return [words for words in commands if words]


def added(words: list[str], server_url: str) -> list[str]:
    """What the test adds to a README command (see the module docstring)."""
    script = words[1]
    if script == "tools/init_config.py":
        return [*words, "--epochs", "1", "--seeds", "0", "--no-progress"]
    if script == "tools/make_questions.py" and "--check" not in words:
        return [*words, "--base-url", server_url, "--backoff", "0", "--timeout", "30"]
    if script == "InternVL_logits/make_makd_logits_json.py":
        assert words[words.index("--model") + 1] == REAL_TEACHER
        words = [w if w != REAL_TEACHER else "tiny" for w in words]
        return [*words, "--no-progress"]
    return words


def run(words: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / words[1]), *words[2:]]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{shlex.join(words)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_quickstart_block_is_the_six_commands_of_the_issue():
    scripts = [words[1] for words in readme_commands()]
    assert scripts == ["tools/init_config.py", "tools/make_questions.py", "tools/make_questions.py",
                       "InternVL_logits/make_makd_logits_json.py", "tools/our_train.py", "tools/study.py"]  # fmt: skip
    assert all(words[0] == "python" for words in readme_commands())


def test_the_quickstart_from_a_folder_of_photos_to_a_study_table(tmp_path, tmp_path_factory):
    write_photo_folders(tmp_path / "data" / "mine", classes=3, train_per_class=6, test_per_class=2,
                        min_side=72, max_side=100)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAKD_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
           "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": "", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    selection = CANDIDATES[::2]  # the 20 the scripted LLM selects
    script = [json.dumps({"questions": CANDIDATES}), json.dumps({"questions": selection})]
    outputs = {}
    with ScriptedLLMServer(script) as server:
        for words in readme_commands():
            outputs[len(outputs)] = run(added(words, server.base_url), tmp_path, env)
        assert len(server.requests) == 2  # generate N, select Q

    # 1. init_config: the config and the study, for 3 classes of photos.
    assert "recipe 'photos'" in outputs[0].stdout
    assert (tmp_path / "mine.yaml").is_file() and (tmp_path / "mine_study.yaml").is_file()
    # 2-3. the questions stage 2 read, screened.
    questions = tmp_path / "data" / "mine" / "questions.txt"
    assert read_questions(questions) == selection
    assert "all 20 questions passed the screening against 3 classes" in outputs[2].stdout
    # 4. every training image answered, by a teacher that says its numbers mean nothing.
    rows = read_aspect_file(tmp_path / "data" / "mine" / "aspects_train.json")
    assert len(rows.ids) == 18 and rows.values.shape == (18, 20)
    assert "its answers (and anything trained on them) mean nothing" in outputs[3].stderr
    assert "never screened" not in outputs[3].stderr
    # 5. one run trained on them.
    summary = json.loads((tmp_path / "output" / "mine" / "mine" / "summary.json").read_text())
    assert summary["num_classes"] == 3 and summary["num_aspects"] == 20
    # 6. the study table: the baseline, MaKD and the random control, the teacher marked as the tiny one.
    table = (tmp_path / "output" / "studies" / "mine" / "results.md").read_text()
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert {"baseline", "makd", "random"} <= set(lines)
    assert "tiny random teacher" in lines["makd"] and "tiny random teacher" not in lines["random"]
