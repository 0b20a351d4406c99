# Two entry points for a fresh clone (see README.md):
#   make pretrain   set up .venv, then pretrain on the embedded demo corpus (JAX)
#   make test       set up .venv, then run the test suite on TensorFlow, JAX and PyTorch
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BACKENDS ?= tensorflow jax torch
PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: setup pretrain test

$(VENV)/.installed: pyproject.toml $(PLUGINS)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[all]" $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

setup: $(VENV)/.installed

pretrain: setup
	KERAS_BACKEND=jax $(BIN)/python recipes/pretrain.py $(ARGS)

test: setup
	@status=0; for b in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$b ==="; \
	  KERAS_BACKEND=$$b $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadscope $(PYTEST_ARGS) || status=1; \
	done; exit $$status
