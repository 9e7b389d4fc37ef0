# kpsim: the two commands a newcomer types are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench build browser clean fuzz

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The compiled core (src/kpsim/_core.py): the hot modules compiled by mypyc from the same
# source into build/core/. Skipped when up to date; a failed build prints one line and
# the package runs as pure Python. KPSIM_PURE=1 forces pure Python at run time.
build: $(STAMP)
	$(BIN)/python tools/build_core.py

demo: $(STAMP) build
	$(BIN)/kpsim run

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/lint-imports

# kpsim report's test opens a report in Debian's chromium (tests/engine/test_report_browser.py):
# installed with apt-get when missing, as root; otherwise that test fails and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends chromium >/dev/null; } \
	  || echo "make: chromium is missing and cannot be installed here (needs root and apt-get)"

# The whole suite against the compiled core, then the same model as pure Python
# (KPSIM_PURE=1) on a representative subset, so both builds are checked. Both spread
# over the machine's CPUs with pytest-xdist (PYTEST_JOBS=1: one process, in order).
PURE_SUBSET := tests/hw tests/mm tests/kpkeys tests/test_core.py tests/workloads/test_trace.py
PYTEST_JOBS ?= auto
test: lint build browser
	$(BIN)/pytest -n $(PYTEST_JOBS)
	KPSIM_PURE=1 $(BIN)/pytest -n $(PYTEST_JOBS) $(PURE_SUBSET)

# The long fuzz run (tests/fuzz): 10^5 seeded mutational cases per input format, then
# the same formats under atheris (coverage-guided) when it installs; make test runs a
# short seeded part of it. FUZZ_CASES=N changes the count.
FUZZ_CASES ?= 100000
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz --cases $(FUZZ_CASES)
	$(BIN)/python -m pip install --quiet -e '.[fuzz]' && \
	$(BIN)/python -m tests.fuzz --atheris --cases $(FUZZ_CASES) || \
	echo "make fuzz: atheris unavailable or failed (see above)"

bench: $(STAMP) build
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
