# josh-factory: `make demo` (install + main job on the embedded default), `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# MultiWOZ: ../shared/multiwoz when it is beside the checkout, else whatever FACTORY_MULTIWOZ says.
export FACTORY_MULTIWOZ ?= $(if $(wildcard ../shared/multiwoz/data.json),$(abspath ../shared/multiwoz),)
WAREHOUSE ?= warehouse.duckdb

.PHONY: install demo test bench
install: $(VENV)/.installed

# torch first and pinned: it resolves to the local CPU wheel; an unpinned torch pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/factory toolwoz build -w $(WAREHOUSE)
	$(VENV)/bin/factory toolwoz call search_train '{"departure": "cambridge", "destination": "ely", "day": "friday", "leaveAt": "17:00"}' -w $(WAREHOUSE)

test: install
	$(VENV)/bin/python -m pytest

bench: install
	$(VENV)/bin/python bench/tools.py
	$(VENV)/bin/python bench/harvest.py
