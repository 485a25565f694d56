# Two commands: `make demo` (the whole job, offline, on the local Hub) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HUB_PORT ?= 8765
HUB_DIR ?= .hub
DATA_DIR ?= ../shared/data/alien-vs-predator
WEIGHTS_DIR ?= ../shared/weights
# Another folder: make demo DATA_DIR=path/to/leaves NAME=leaves DEMO_ARGS='--title Leaves'; then make space NAME=leaves.
NAME ?= alien-vs-predator
DEMO_ARGS ?= $(if $(wildcard demo/$(NAME).args),@demo/$(NAME).args)
# The Hub cache does not key on the endpoint: keep the local Hub's downloads apart from huggingface.co's.
HF_HOME_LOCAL = $(CURDIR)/.cache/localhub-hf
HUB_ENV = HF_ENDPOINT=http://127.0.0.1:$(HUB_PORT) HF_TOKEN=$${LOCALHUB_TOKEN:-$$(cat $(abspath $(HUB_DIR))/token)} \
	HF_HUB_DISABLE_XET=1 HF_HOME=$(HF_HOME_LOCAL)

.PHONY: venv hub hub-stop demo space study retrain bench browser web test test-fast lint

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-compile -r requirements.txt
# The bytecode on every core (pip compiles on one: ~20 s saved here). Like pip, a file this Python cannot parse
# (torch ships one for 3.12) stays uncompiled, hence the `|| true`.
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

hub: venv
	@$(PY) -m localhub.ctl start --port $(HUB_PORT) --data_dir $(HUB_DIR) --hf_home $(HF_HOME_LOCAL)

hub-stop: venv
	@$(PY) -m localhub.ctl stop --data_dir $(HUB_DIR)

demo: venv web
	@$(PY) -m localhub.ctl start --port $(HUB_PORT) --data_dir $(HUB_DIR) > /dev/null
	$(HUB_ENV) $(PY) -m training.demo --data_dir $(DATA_DIR) --weights_dir $(WEIGHTS_DIR) --name $(NAME) $(DEMO_ARGS)
	@echo "local Hub still running at http://127.0.0.1:$(HUB_PORT) (make hub prints its exports; make hub-stop ends it)"

# Serve the published Space from the local Hub's copy, as a visitor would get it.
space: venv
	@$(PY) -m localhub.ctl start --port $(HUB_PORT) --data_dir $(HUB_DIR) > /dev/null
	rm -rf .cache/space && $(HUB_ENV) $(PY) -c "from huggingface_hub import snapshot_download; \
		snapshot_download('demo/$(NAME)', repo_type='space', local_dir='.cache/space')"
	cd .cache/space && $(HUB_ENV) GRADIO_SERVER_NAME=127.0.0.1 $(abspath $(PY)) app.py

# The seed's augmentation study (about 10 minutes on 2 cores); `make demo` then puts it in the card.
study: venv
	@$(PY) -m localhub.ctl start --port $(HUB_PORT) --data_dir $(HUB_DIR) > /dev/null
	$(HUB_ENV) $(PY) -m training.study --dataset_id demo/$(NAME)

retrain: venv
	@$(PY) -m localhub.ctl start --port $(HUB_PORT) --data_dir $(HUB_DIR) > /dev/null
	$(HUB_ENV) $(PY) -m training.retrain --dataset_id demo/$(NAME) \
		--model_id demo/$(NAME)-classifier --space_id demo/$(NAME) --static_space_id demo/$(NAME)-browser $(ARGS)

# Every benchmark, one at a time (about 15 minutes); run `make demo` first: the time-to-accuracy
# benchmark reads its dataset from the local Hub and the inference one its model. See BENCHMARKS.md.
bench: venv
	@$(PY) -m localhub.ctl start --port $(HUB_PORT) --data_dir $(HUB_DIR) > /dev/null
	set -e; for name in roofline train_throughput scale time_to_accuracy crop_choice localhub; do $(HUB_ENV) $(PY) -m bench.$$name; done
	$(HUB_ENV) $(PY) -m bench.inference --model_dir outputs/demo/alien-vs-predator/train/model
	$(HUB_ENV) $(PY) -m bench.space_start --model_id demo/alien-vs-predator-classifier

# The real-browser test needs Debian's chromium + chromium-driver; install them where apt can (as root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	   >/dev/null) || echo "chromium not installed: the browser test will be skipped"; }

# The in-browser page's onnxruntime-web (web/package-lock.json), from the npm registry.
web: web/node_modules/.installed
web/node_modules/.installed: web/package-lock.json
	cd web && npm ci --no-audit --no-fund --silent
	touch $@

# One pytest-xdist worker per core (each pinned to its core by tests/conftest.py), whole modules per worker.
test: venv browser web
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=15 -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

# The tier to run after every change (no backbone training, no Gradio server, no subprocess): about 30 s here.
test-fast: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow"

lint: venv
	$(PY) -m ruff check .
