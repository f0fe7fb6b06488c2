"""Installable package for makd: multi-aspect knowledge distillation (MaKD)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name="makd",
    version="0.1.0",
    description="Multi-aspect knowledge distillation: LLM questions, MLLM yes/no targets, student training",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["makd", "makd.*"]),
    # data files read at run time (published results, prompt files): needed by a non-editable install too
    package_data={"makd": ["analysis/*.yaml", "llm/prompt_files/*.yaml"]},
    install_requires=read_requirements(),
    extras_require={"dev": ["pytest>=8.0", "ruff>=0.6", "import-linter>=2.0"], "wandb": ["wandb"]},
)
