# Two entry points for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?= .data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint typecheck pytest bench clean venv dev tiny system

system: $(VENV)/.system

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: the CPU build that lies on this disk; anything after it sees torch satisfied.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -q -e '.[dev]'
	touch $@

# System packages the tests use: Tesseract (OCR, with Chinese), a CJK font to draw the
# OCR test pages, and Chromium for the console's browser tests (Playwright drives it;
# its own browser download cannot work offline). Installed with apt when missing;
# without them those tests skip and say why.
SYSTEM_PACKAGES ?= tesseract-ocr tesseract-ocr-chi-sim fonts-wqy-zenhei chromium
$(VENV)/.system: | $(VENV)/.installed
	@if ! command -v tesseract >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  ($$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES)) \
	    || echo "warning: could not install $(SYSTEM_PACKAGES); the tests that need them skip"; \
	fi
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.dev

$(DATA)/tiny/.done: $(VENV)/.installed
	$(VENV)/bin/rwkv-rag make-tiny-models $(DATA)/tiny
	touch $@

tiny: $(DATA)/tiny/.done

# The default config generates its tiny random RWKV model into $(DATA) on first start.
# MODEL=NAME (or RWKV_RAG_MODEL; a catalog name or hf://...) pulls that model once into
# $(DATA)/models and serves it with the embedded embedding model, from its own config file.
MODEL ?= $(RWKV_RAG_MODEL)
ifeq ($(strip $(MODEL)),)
serve: $(VENV)/.installed
	RWKV_RAG_DATA_DIR=$(DATA) $(VENV)/bin/rwkv-rag serve --host $(HOST) --port $(PORT)
else
MODEL_CONFIG := $(DATA)/serve-$(subst /,-,$(subst :,,$(MODEL))).yaml
serve: $(VENV)/.installed
	RWKV_RAG_DATA_DIR=$(DATA) $(VENV)/bin/rwkv-rag models pull '$(MODEL)' --config $(MODEL_CONFIG)
	RWKV_RAG_DATA_DIR=$(DATA) $(VENV)/bin/rwkv-rag serve --config $(MODEL_CONFIG) --host $(HOST) --port $(PORT)
endif

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

pytest: $(VENV)/.dev $(VENV)/.system
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

bench: $(VENV)/.dev
	$(PY) bench/embeddings.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
