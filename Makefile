# Two commands: `make demo` (the whole job, offline, on the local Hub) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HUB_PORT ?= 8765
HUB_DIR ?= .hub
DATA_DIR ?= ../shared/data/alien-vs-predator
WEIGHTS_DIR ?= ../shared/weights
# The Hub cache does not key on the endpoint: keep the local Hub's downloads apart from huggingface.co's.
HUB_ENV = HF_ENDPOINT=http://127.0.0.1:$(HUB_PORT) HF_TOKEN=$$(cat $(HUB_DIR)/token) HF_HUB_DISABLE_XET=1 \
	HF_HOME=$(CURDIR)/.cache/localhub-hf

.PHONY: venv hub hub-stop demo test lint

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

hub: venv
	@$(PY) -m localhub.ctl start --port $(HUB_PORT) --data_dir $(HUB_DIR)

hub-stop: venv
	@$(PY) -m localhub.ctl stop --data_dir $(HUB_DIR)

demo: venv
	@$(PY) -m localhub.ctl start --port $(HUB_PORT) --data_dir $(HUB_DIR) > /dev/null
	$(HUB_ENV) $(PY) -m training.demo --data_dir $(DATA_DIR) --weights_dir $(WEIGHTS_DIR)
	@echo "local Hub still running at http://127.0.0.1:$(HUB_PORT) (make hub prints its exports; make hub-stop ends it)"

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .
