# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv on first use and installs armq into it.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,tflite,weights
# onnxruntime 1.32 on Linux enables telemetry by default (threads, files, DNS queries).
export ORT_DISABLE_TELEMETRY := 1

.PHONY: demo test venv sysdeps clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

venv: $(STAMP)

sysdeps:
	@bash scripts/sysdeps.sh

demo: $(STAMP) sysdeps
	$(BIN)/python -m deploy

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) artifacts runs
