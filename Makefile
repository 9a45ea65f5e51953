# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned for the bootstrap: on the reference machine this is a CPU wheel on disk,
# elsewhere the normal PyPI build (CUDA on a GPU machine).
TORCH ?= torch==2.13.0

.PHONY: demo test install install-test upgrade clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# constraints.txt: the exact versions the suite last passed with (see `make upgrade`).
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -c constraints.txt -e ".[test,bench]"
	touch $@

# How versions move: install the newest releases pyproject allows, run the suite, and only if it
# passes, write them to constraints.txt (commit it with whatever the new releases needed).
upgrade: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q --upgrade --upgrade-strategy eager -e ".[test,bench]"
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton|ift)[=@ ]'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	touch $(VENV)/.installed $(VENV)/.installed-test

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The whole story on the built-in suite: instruction FT, single-task FT, held-out eval, report.
demo: $(VENV)/.installed
	$(BIN)/ift mix configs/demo.yaml
	$(BIN)/ift train configs/demo.yaml
	$(BIN)/ift train configs/demo_ft.yaml
	$(BIN)/ift eval runs/demo_ift --shots 0,2
	$(BIN)/ift eval runs/demo_ft --shots 0,2
	$(BIN)/ift compare runs/demo_ift runs/demo_ft --out runs/comparison --eval eval_0shot --eval eval_2shot
	@echo "runs: runs/demo_ift runs/demo_ft (metrics.jsonl, checkpoints/, wandb/ offline runs)"
	@echo "report: runs/comparison/COMPARISON.md runs/comparison/comparison.png"

# Lint, format and type checks first (seconds; pyproject's [tool.ruff] and [tool.mypy]), then the suite.
test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
