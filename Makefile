# One entry point for set-up, tests and the demo. `make setup` builds .venv with torch and
# torchvision pinned (constraints.txt) so they install from local disk, not a multi-GB download.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS ?= runtime,train,export,dev

DIST   ?= dist

.PHONY: setup tensorrt-bindings test test-all lint demo wheel default-model clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# NVIDIA's TensorRT Python bindings (8.6, 10.3, 11.4) into .cache/tensorrt-bindings/, for the
# test that checks our TensorRT calls against them. Never needed by the product itself.
tensorrt-bindings: setup
	$(BIN)/python tests/tensorrt_bindings.py || echo "some TensorRT bindings could not be fetched: their test skips, saying why"

# pytest exits 5 when it collected no tests: that is a failure here, not a pass. The last line
# says which tests skipped here and why (a checkout without shellcheck skips two that CI, whose
# .ci/run installs it, runs).
test: setup
	$(BIN)/ruff check .
	rm -f .pytest_cache/last-run.xml; \
	$(BIN)/python -m pytest --junitxml=.pytest_cache/last-run.xml; rc=$$?; \
	$(BIN)/python tests/skip_summary.py .pytest_cache/last-run.xml; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no tests: failing"; exit 1; fi; exit $$rc

# Everything, including slow real-data checks (not run by CI).
test-all: setup
	$(BIN)/python -m pytest -m "" ; rc=$$?; [ $$rc -ne 5 ] && exit $$rc || exit 1

lint: setup
	$(BIN)/ruff check .

demo: setup
	$(BIN)/wbc-edge demo $(DEMO_ARGS)

# What a Jetson or a PC without this checkout installs: $(DIST)/wbc_edge-<version>-py3-none-any.whl
# with the packaged model (wbc_edge/models/*.onnx), without studies, tests or checkpoints. Built
# offline (setuptools from .venv, no build isolation). build/ and wbc_edge.egg-info/ go first:
# setuptools adds every file an old egg-info's SOURCES.txt lists (the editable install's lists
# benchmarks/studies/) and reuses build/lib, so either would put back what the wheel leaves out.
wheel: setup
	rm -rf build wbc_edge.egg-info
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w $(DIST) .
	@ls $(DIST)/wbc_edge-*.whl

# Re-export the packaged default student (wbc_edge/models/) from its checkpoint; copy a new
# student's best.pt to DEFAULT_CKPT first. RECORD names the results file that measured it.
DEFAULT_CKPT ?= wbc_edge/models/student-tinyresnet_xs_wide.pt
RECORD ?= benchmarks/results/student-size.md
default-model: setup
	$(BIN)/python -m wbc_edge.models.refresh $(DEFAULT_CKPT) \
		--data benchmarks/results/pbc9-split.csv --record $(RECORD)

clean:
	rm -rf $(VENV) demo-out build $(DIST) .pytest_cache .ruff_cache
