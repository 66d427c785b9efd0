# Set-up and entry points. Every target creates .venv from the exact pins when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
export PYTENSOR_FLAGS ?= compile__timeout=1800

.PHONY: bytecode run test test-slow test-slurm test-render bench bench-gpu lint format figures report readme conda-env clean-outputs

$(BIN)/snakemake: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==26.0.1"
	$(BIN)/pip install --quiet --no-compile -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	# the installed packages' bytecode on every core (pip compiles one file at a time: 25 s
	# more on 2 cores); without it, where PYTHONDONTWRITEBYTECODE=1 every import compiles
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib > /dev/null
	touch $@

venv: $(BIN)/snakemake

# The package's bytecode, refreshed before every entry point: every job process imports the
# package, and where the environment forbids writing bytecode (PYTHONDONTWRITEBYTECODE=1) each
# process would otherwise compile its sources again, 0.6 CPU-s per process (tests/README.md).
# compileall rewrites only what changed; a stale file is ignored by Python, never used.
bytecode: $(BIN)/snakemake
	$(BIN)/python -m compileall -q src > /dev/null

## make run: the default study (config/config.yaml) to report/; a line of fit-level progress
## (fits done / planned, time left at the rate so far) every minute beside Snakemake's output
run: bytecode
	$(BIN)/python -m vimodes.progress --every 60 -- $(BIN)/snakemake --cores $(CORES)

## make test: unit tests, dry runs, lint, format check and the end-to-end quick study, on two
## pytest-xdist workers (a study or a large dry run shared by tests is computed once: conftest)
test: bytecode
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=40

## make test-slow: reliability tests that interrupt and resume real studies, the smoke study
test-slow: bytecode
	$(BIN)/python -m pytest -q -m slow -o addopts=""

## make test-slurm: the smoke study on a real single-node SLURM cluster, compared with a local run
test-slurm: bytecode
	$(BIN)/python -m pytest -q -m slurm -o addopts=""

## make test-render: the report rendered in headless Chromium (tests/check_report_render.sh);
## installs chromium with apt-get when it is missing (needs root then)
test-render: bytecode
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && \
	    ! command -v google-chrome >/dev/null; then \
	    if [ "$$(id -u)" != 0 ]; then \
	        echo "test-render: chromium is missing; run as root to apt-get install it" >&2; \
	        exit 1; \
	    fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi
	$(BIN)/python -m pytest -q -m render -o addopts=""

## make bench: performance benchmarks (prints a table; see benchmarks/README.md)
bench: bytecode
	$(BIN)/python benchmarks/run_benchmarks.py

## make bench-gpu: on a machine with an NVIDIA GPU, the GPU rows: installs the CUDA build of the
## pinned jax, then 1000 seeds x 10000 meanfield ADVI steps in one call and vectorised numpyro
## NUTS against nutpie; stops with an error when jax sees no GPU (benchmarks/README.md)
JAX_CUDA ?= cuda12
bench-gpu: bytecode
	$(BIN)/pip install --quiet "jax[$(JAX_CUDA)]==$$($(BIN)/python -c 'import jax; print(jax.__version__)')"
	$(BIN)/python benchmarks/run_benchmarks.py --require-gpu --vectorised-only --no-pymc-reference \
		--vectorised-chunks 100,1000 --nuts-vectorised 25x4

## make figures: rebuild figures and the report from existing fits only (never refits: only
## the rules of vimodes.figure_specs.FIGURE_RULES -- figure, report and figure-table rules -- run)
CONFIGFILE ?=
figures: bytecode
	$(BIN)/snakemake figures --cores $(CORES) $(if $(CONFIGFILE),--configfile $(CONFIGFILE)) \
		--allowed-rules $$($(BIN)/python -m vimodes.figure_specs)

## make readme: regenerate the README's results block from report/report.md (after make run)
readme: $(BIN)/snakemake
	$(BIN)/python -c "from vimodes.report import update_readme; update_readme('report/report.md', 'README.md')"

## make conda-env: regenerate workflow/envs/vimodes.yaml (for --sdm conda) from requirements.lock
conda-env: $(BIN)/snakemake
	$(BIN)/python -m vimodes.workflow_plan requirements.lock > workflow/envs/vimodes.yaml

lint: $(BIN)/snakemake
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/ruff check .

format: $(BIN)/snakemake
	$(BIN)/snakefmt Snakefile workflow/rules

clean-outputs:
	rm -rf data/sim data/fits data/classified data/tables figures/*.png figures/*.svg report/*.md report/*.html
