# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both install into a local virtualenv first, so nothing depends on what the
# machine happens to have.
#
# torch is installed before the package, pinned, so pip never resolves a plain
# `torch` requirement to several GB of CUDA wheels. Users with GPUs override:
#   make demo TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The oldest Optuna pyproject.toml allows (keep the two equal: tests/test_packaging.py checks).
# `make test` runs the suite on it too, from a folder that shadows the venv's newest Optuna.
OLDEST_OPTUNA ?= 4.3.0
OLDEST := $(VENV)/optuna-$(OLDEST_OPTUNA)
DEMO_DIR ?= demo

.PHONY: install demo test lint bench clean postgres-server browser slurm-install

# The package's own bytecode, written each time (only what changed is compiled again): the install is
# editable, and where PYTHONDONTWRITEBYTECODE is set (many containers) Python would otherwise compile
# every hpsearch module from source in every process, the command's and each worker's.
install: $(STAMP)
	$(BIN)/python -m compileall -q hpsearch

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test,all]"
	touch $(STAMP)

# The main job on the built-in study, in a fresh results folder each time:
# coarse search, border flags, derived refine stage, leaderboard CSV.
demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/hpsearch coarse studies/digits_mlp.toml --dir $(DEMO_DIR)
	$(BIN)/hpsearch refine digits_mlp --dir $(DEMO_DIR)
	$(BIN)/hpsearch leaderboard digits_mlp --dir $(DEMO_DIR) --stage all --top 10 --csv $(DEMO_DIR)/leaderboard.csv
	@echo "Leaderboard CSV: $(DEMO_DIR)/leaderboard.csv"

# The postgres tests start their own server on loopback; they need Debian's
# PostgreSQL server binaries (installed here when missing and we may). The SLURM
# tests likewise start their own one-node cluster (slurm-install).
test: install postgres-server slurm-install browser $(OLDEST)/.installed
	$(BIN)/python -m pytest
	@echo "== the suite again, on the oldest Optuna that pyproject.toml allows ($(OLDEST_OPTUNA))"
	PYTHONPATH=$(OLDEST) $(BIN)/python -m pytest -q

# ruff (lint and format) and mypy, configured in pyproject.toml; .ci/run runs it before the tests.
LINTED := hpsearch tests bench studies
lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy hpsearch

$(OLDEST)/.installed: $(STAMP)
	rm -rf $(OLDEST)
	$(BIN)/python -m pip install --quiet --no-deps --target $(OLDEST) "optuna==$(OLDEST_OPTUNA)"
	touch $@

postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) ; } || \
	  echo "warning: no PostgreSQL server binaries; the postgres tests will be skipped (apt-get install postgresql)"

# tests/slurm.py runs a one-node SLURM cluster on loopback (slurmctld, slurmd and munged as root, in a
# temporary folder): Debian's SLURM 22.05 and MUNGE, installed here when missing and we may.
slurm-install:
	@{ PATH="$$PATH:/usr/sbin:/sbin"; command -v slurmctld && command -v slurmd && command -v munged && command -v sbatch; } >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null) ; } || \
	  echo "warning: no SLURM/MUNGE binaries; the slurm tests will be skipped (apt-get install slurm-wlm munge)"

# The report's phone-width test loads it in a real headless Chromium (Debian's; skipped without it).
browser:
	@command -v chromium >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "warning: no chromium; the report's browser test will be skipped (apt-get install chromium)"

bench: install
	$(BIN)/python bench/dispatch.py

# The peers of bench/peers (issue 29), each in its own virtualenv .venv-peers/NAME (DEHB pins numpy < 2,
# NePS wants numpy >= 2): torch first (TORCH_SPEC), then the peer at a pinned version and scikit-learn (the
# digits workload reads scikit-learn's bundled file); a .pth makes the repository importable. Never part of
# `make test`. Optuna's samplers, random + successive halving and `hpsearch search` run in $(VENV).
PEERS_VENV ?= .venv-peers
PEER_smac ?= smac==2.4.1
PEER_dehb ?= dehb==0.1.2
PEER_neps ?= neural-pipeline-search==0.17.0
.PHONY: bench-peers bench-peers-quick bench-peers-full
bench-peers: install $(PEERS_VENV)/smac/.installed $(PEERS_VENV)/dehb/.installed $(PEERS_VENV)/neps/.installed
	$(BIN)/python bench/peers/common.py --prepare

# The quick version (seeds 0-1, 60 trial-epochs, one retrain per pick; bench/results/peers-quick/) and
# the whole run (held-out seeds 100-109, each workload's budget, 3 retrains; bench/results/peers/ and
# bench/results/anytime-*.png): runs, scores and plots. JOBS=2 runs two of them at once (one per core).
JOBS ?= 1
bench-peers-quick bench-peers-full: bench-peers
	for i in $$(seq $(JOBS)); do \
	  $(BIN)/python bench/peers/run.py $(if $(filter bench-peers-quick,$@),--quick) --no-score & done; wait
	$(BIN)/python bench/peers/run.py $(if $(filter bench-peers-quick,$@),--quick)

$(PEERS_VENV)/%/.installed: Makefile
	test -x $(PEERS_VENV)/$*/bin/python || $(PYTHON) -m venv $(PEERS_VENV)/$*
	$(PEERS_VENV)/$*/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/$*/bin/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC)" > $(PEERS_VENV)/$*/torch-constraint.txt  # NePS's torchvision would otherwise bring another torch
	$(PEERS_VENV)/$*/bin/python -m pip install --quiet -c $(PEERS_VENV)/$*/torch-constraint.txt "$(PEER_$*)" scikit-learn
	echo "$(CURDIR)" > "$$($(PEERS_VENV)/$*/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/hpsearch_bench.pth"
	$(PEERS_VENV)/$*/bin/python -m pip freeze > $(PEERS_VENV)/$*/versions.txt
	touch $@

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
