# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up first
# (a .venv with pinned dependencies); a second run installs nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mbtrain-installed
export DS_ACCELERATOR ?= cpu
# DeepSpeed's compiled ops live beside this environment: two checkouts (each with its own venv)
# would otherwise rebuild each other's op in the shared ~/.cache on every switch.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions
# DeepSpeed and streaming print a line per process on import; keep the console readable.
export PYTHONWARNINGS ?= ignore::DeprecationWarning,ignore::FutureWarning,ignore::UserWarning

.PHONY: setup demo test test-fast lint format bench bench-quality slurm-up slurm-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@# DeepSpeed compiles its CPU communication op on first use (about a minute); do it here, so
	@# the demo's time is training. Not fatal: DeepSpeed builds it later if this fails.
	-DS_ACCELERATOR=cpu $(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" >/dev/null 2>&1
	touch $@

demo: setup
	$(PY) -m mbtrain.demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Everything that can run here: unit, distributed (gloo) and Slurm tests.
test: setup lint slurm-up
	. $${MBTRAIN_SLURM_DIR:-/tmp/mbtrain-slurm}/env.sh && $(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not slurm"

bench: setup
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

# Hours, not minutes: fetches four corpora, screens every candidate for a few minutes, then
# trains recipes/cpu.yaml for 30 minutes on each corpus (benchmarks/results_quality.md).
bench-quality: setup
	$(PY) -m benchmarks.bench_quality --corpora code --candidates all --minutes 3 --jobs 2 $(BENCH_ARGS)
	$(PY) -m benchmarks.bench_quality --corpora text,code,image,audio --candidates cpu --minutes 30 --jobs 2 $(BENCH_ARGS)

slurm-up:
	bash cluster/slurm_up.sh

slurm-down:
	bash cluster/slurm_down.sh

clean:
	rm -rf runs/demo .pytest_cache .ruff_cache
