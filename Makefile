# The two commands of the README:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: setup test lint demo bench browser clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Headless Chromium for the web-app test (Debian package); skipped quietly when apt is unavailable.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "note: could not install chromium; browser test will be skipped"; }

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks experiments
	$(VENV)/bin/lint-imports

# Then the golden and equivalence comparisons (pytest -m golden) again on torch's AVX2 kernels and one
# thread: their bounds come from measuring every instruction set and thread count (docs/robustness.md), so
# a bound at the edge of one fails on any machine (about 1.5 minutes on 2 cores).
test: $(STAMP) browser lint
	OMP_NUM_THREADS=2 $(VENV)/bin/pytest -q tests
	@if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then \
	  echo "golden and equivalence tests again on torch's AVX2 kernels, one thread:"; \
	  ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -m golden tests; \
	else echo "note: this CPU has no AVX2: the golden tests' second pass is skipped"; fi

# Degrade scikit-image's bundled photos 7 ways (and 2 at once) and restore them with the embedded default model.
demo: $(STAMP)
	$(VENV)/bin/ramir demo --out demo-output

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
