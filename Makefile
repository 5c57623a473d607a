# Two entry points for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?= .data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test lint typecheck pytest bench clean venv dev tiny system gpu-wheels

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

# Wheels a GPU machine without a package index needs for bench/gpu_check.sh, beyond what it
# has (torch, triton, numpy, einops, httpx, pyyaml, rich, click ...): CPython 3.12, manylinux
# x86_64, no dependency resolution (each one is named). Pure wheels are py3-none-any; the
# compiled ones match manylinux_2_17/2_28 (httptools, msgspec, pydantic-core, aiohttp and its
# C-extension deps) or manylinux_2_31 (llguidance ships only that).
WHEELS ?= .whl
GPU_WHEELS := fla-core==0.6.0 rwkv==0.8.32 llguidance==1.9.1 \
	litestar==2.25.0 litestar-htmx==0.5.0 rich-click==1.9.9 polyfactory==3.5.0 faker==40.63.0 \
	httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 sniffio==1.3.1 \
	uvicorn==0.55.0 httptools==0.9.0 msgspec==0.23.0 multipart==2.0.1 \
	pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
	pydantic-settings==2.16.3 python-dotenv==1.2.4 prometheus-client==0.26.0 \
	swagger-ui-bundle==1.1.0 defusedxml==0.7.1 pytesseract==0.3.13 \
	aiohttp==3.14.5 aiohappyeyeballs==2.7.1 aiosignal==1.4.0 frozenlist==1.8.0 \
	multidict==7.2.1 propcache==0.5.4 yarl==1.25.1 typing-extensions==4.16.0
GPU_PLATFORMS := manylinux_2_31_x86_64 manylinux_2_28_x86_64 manylinux_2_17_x86_64 \
	manylinux2014_x86_64
gpu-wheels: $(VENV)/.installed
	mkdir -p $(WHEELS)
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(addprefix --platform ,$(GPU_PLATFORMS)) -d $(WHEELS) $(GPU_WHEELS)
	@ls $(WHEELS)/*.whl | wc -l | xargs echo wheels: && du -sh $(WHEELS)

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
