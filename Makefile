# make demo: set up .venv (first time) and run the built-in demo on the CPU: baseline, MaKD and the random-target
#   control over 3 seeds, the table with paired intervals and a verdict (output/demo/table.md; docs/demo.md).
# make test: set up .venv (first time) and run the test suite.
# make lint: ruff, and lint-imports: the layers of makd (.importlinter, docs/architecture.md).
# make demo-study: the 5-condition x 3-seed demo study (configs/studies/demo.yaml, docs/studies.md).
# make demo-oriented: the oriented variant under the official transform and the recipe (docs/demo.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-study demo-oriented test lint setup clean-demo

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py

demo-study: $(STAMP)
	test -f data/demo_study/dataset.json || $(PY) tools/make_demo.py --out data/demo_study --train-per-class 60 --test-per-class 30
	$(PY) tools/study.py configs/studies/demo.yaml

demo-oriented: $(STAMP)
	test -f data/demo_oriented/dataset.json || $(PY) tools/make_demo.py --variant oriented --out data/demo_oriented
	$(PY) tools/study.py configs/studies/demo_oriented_official.yaml
	$(PY) tools/study.py configs/studies/demo_oriented_recipe.yaml

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check makd tools tests InternVL_logits
	$(VENV)/bin/lint-imports

clean-demo:
	rm -rf data/demo output/demo data/demo_study output/studies/demo data/demo_oriented output/studies/demo_oriented_official output/studies/demo_oriented_recipe
