"""The README and docs/ say only what is true of this repository: every repository path they name exists, no path of
a development machine appears, and every command they show parses (issue 21, item 7).

A command parses when its script exists and its own argument parser accepts the arguments: the script's `main` is
called with them and stopped right after parsing (nothing runs); `make` targets must be in the Makefile; the
`KEY VALUE` overrides of a training command must be keys of the config tree, and a config file from the repository
must load with them. Usage lines keep their placeholders (`CONFIG.yaml`, `FILE`): `[...]` option groups and `...`
are dropped before parsing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELLS = ("", "bash", "sh", "shell", "console")
# Values of these options are files a command writes: they need not exist yet.
OUTPUT_OPTIONS = ("--out", "--output", "--out-dir", "--cache", "--study", "OUTPUT_DIR")
TOP_LEVEL = ("makd", "tools", "configs", "docs", "questions", "tests", "InternVL_logits", ".ci")
REPO_PATH = re.compile(rf"(?<![\w/.<-])(?:{'|'.join(map(re.escape, TOP_LEVEL))})/[\w./-]*")
REPO_FILE = re.compile(
    r"(?<![\w/.-])(?:Makefile|setup\.py|pyproject\.toml|requirements(?:-dev)?\.txt|\.importlinter)\b"
)
# A page the text points at: a link's target, or a page named in capitals (REFERENCE.md); a bare lower-case name
# such as results.md is a file some command writes.
MARKDOWN = re.compile(r"(?<=\]\()[\w./-]+\.md\b|(?<![\w/<-])[A-Z][\w-]*\.md\b")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:tmp|work|home|root|Users|mnt|scratch|private|var/folders)/")


def code_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced block."""
    blocks, current = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            if current is None:
                current = (line.strip()[3:].strip().lower(), number + 1, [])
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current[2].append(line)
    return blocks


def shown_commands(document: Path) -> list[tuple[int, list[str]]]:
    """(line number, words) of every command in the document's shell blocks, continuations joined, comments cut."""
    found = []
    for language, start, lines in code_blocks(document.read_text(encoding="utf-8")):
        if language not in SHELLS:
            continue
        pending, first = "", start
        for offset, line in enumerate(lines):
            if not pending:
                first = start + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            words = shlex.split(pending + line, comments=True)
            pending = ""
            commands: list[list[str]] = [[]]
            for word in words:  # `a && b`: two commands
                commands.append([]) if word == "&&" else commands[-1].append(word)
            for words in commands:
                if words and (words[0] in ("python", "make", "torchrun") or words[0].endswith("/python")):
                    found.append((first, words))
    return found


def without_placeholders(words: list[str]) -> list[str]:
    """Drop `[...]` option groups (nested) and `...` from a usage line."""
    out, depth = [], 0
    for word in words:
        depth += word.count("[") if word.startswith("[") else 0
        if depth == 0 and word != "...":
            out.append(word)
        depth -= word.count("]") if depth and word.endswith("]") else 0
    return out


class Parsed(Exception):
    """Raised right after a command's parser accepted its arguments."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


@contextlib.contextmanager
def stop_after_parsing():
    originals = {name: getattr(argparse.ArgumentParser, name) for name in ("parse_args", "parse_intermixed_args")}

    def stopping(name):
        def parse(self, *args, **kwargs):
            raise Parsed(originals[name](self, *args, **kwargs))

        return parse

    for name in originals:
        setattr(argparse.ArgumentParser, name, stopping(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(argparse.ArgumentParser, name, original)


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"doc_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def parse_problem(words: list[str]) -> str:
    """Why the command does not parse, or ""."""
    if words[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(encoding="utf-8"), re.M))
        missing = [t for t in words[1:] if not t.startswith("-") and t not in targets]
        return f"no make target {missing[0]!r}" if missing else ""
    if "-m" in words[:3]:  # python -m pytest FILE: the file must exist
        files = [w for w in words if w.startswith("tests/")]
        return "" if all((REPO / f).exists() for f in files) else f"no test file among {files}"
    script_at = next((i for i, w in enumerate(words) if w.endswith(".py")), None)
    if script_at is None:
        return "no script"
    script, args = REPO / words[script_at], without_placeholders(words[script_at + 1 :])
    if not script.is_file():
        return f"{words[script_at]} does not exist"
    module = load_script(script)
    stderr = io.StringIO()
    with stop_after_parsing(), contextlib.redirect_stderr(stderr):
        try:
            module.main(args)
        except Parsed as parsed:
            return training_problem(script, parsed.namespace)
        except SystemExit as exit_:
            return f"its parser refused it (exit {exit_.code}): {stderr.getvalue().strip().splitlines()[-1:]}"
    return "its main returned without parsing any argument"


def training_problem(script: Path, namespace: argparse.Namespace) -> str:
    """our_train.py / eval.py: the overrides are config keys; a repository config loads with them."""
    if script.name not in ("our_train.py", "train.py") or not hasattr(namespace, "opts"):
        return ""
    from makd.config import load_cfg
    from makd.config.defaults import get_cfg
    from makd.errors import MakdError

    config = namespace.cfg_flag or namespace.config
    opts = list(namespace.opts)
    if namespace.cfg_flag and namespace.config:
        opts.insert(0, namespace.config)
    keys, tree = opts[0::2], get_cfg()
    for key in keys:
        node = tree
        for part in key.split("."):
            if part not in node:
                return f"{key} is not a config key"
            node = node[part]
    if config and (REPO / config).is_file():
        try:
            load_cfg(str(REPO / config), opts)
        except MakdError as err:
            return f"{config} does not load with {opts}: {err}"
    return ""


COMMANDS = [(doc, line, words) for doc in DOCUMENTS for line, words in shown_commands(doc)]


def test_the_documents_show_commands():
    assert len(COMMANDS) > 40
    readme = [words for doc, _, words in COMMANDS if doc.name == "README.md"]
    assert ["python", "tools/init_config.py", "data/mine", "--out", "mine.yaml"] in readme


@pytest.mark.parametrize(
    "doc, line, words", COMMANDS, ids=[f"{d.relative_to(REPO)}:{n}" for d, n, _ in COMMANDS]
)
def test_every_command_shown_parses(doc, line, words, monkeypatch):
    monkeypatch.chdir(REPO)  # the commands are shown as run from the repository's folder
    problem = parse_problem(words)
    assert not problem, f"{doc.relative_to(REPO)}:{line}: {shlex.join(words)}: {problem}"


def test_a_command_that_does_not_parse_is_caught():
    assert "refused" in parse_problem(["python", "tools/init_config.py", "data/mine", "--no-such-option"])
    assert "does not exist" in parse_problem(["python", "tools/no_such_tool.py"])
    assert "not a config key" in parse_problem(["python", "tools/our_train.py", "x.yaml", "SOLVER.EPOCH", "3"])
    assert "no make target" in parse_problem(["make", "deploy"])
    assert parse_problem(["python", "tools/aspects.py", "inspect", "FILE", "[--json]"]) == ""


def output_values(words: list[str]) -> set[str]:
    return {words[i + 1] for i, w in enumerate(words[:-1]) if w in OUTPUT_OPTIONS}


def test_every_repository_path_named_exists_and_no_machine_path_appears():
    problems: list[str] = []
    outputs = {value for _, _, words in COMMANDS for value in output_values(words)}
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            where = f"{document.relative_to(REPO)}:{number}"
            if MACHINE_PATH.search(line):
                problems.append(f"{where}: a path of a development machine: {MACHINE_PATH.search(line).group(0)}")
            for match in [*REPO_PATH.finditer(line), *REPO_FILE.finditer(line)]:
                path = match.group(0).rstrip(".")
                if path in outputs or any(c in path for c in "*<"):
                    continue
                if not (REPO / path).exists():
                    problems.append(f"{where}: {path} does not exist")
            for match in MARKDOWN.finditer(line):
                name = match.group(0)
                if not any((base / name).exists() for base in (REPO, document.parent, REPO / "docs")):
                    problems.append(f"{where}: {name} is not in the repository")
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_the_checks_bite():
    assert MACHINE_PATH.search("see /tmp/cc_real/classes.txt") and not MACHINE_PATH.search("see data/tmp/x")
    assert [m.group(0) for m in REPO_PATH.finditer("run tools/init_config.py and configs/demo/")] == [
        "tools/init_config.py", "configs/demo/"]  # fmt: skip
    assert [m.group(0) for m in MARKDOWN.finditer("REFERENCE.md says [this](docs/demo.md); see results.md")] == [
        "REFERENCE.md", "docs/demo.md"]  # fmt: skip
    assert without_placeholders(["convert", "SRC", "[--images", "DIR", "|", "--config", "CFG]", "..."]) == [
        "convert", "SRC"]  # fmt: skip
