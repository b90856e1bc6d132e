# ALARA-QA: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv on a fresh machine; torch==2.13.0 (CPU wheel) goes in first so that
# nothing pulls a CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean browser
# The PDF report and the browser tests need headless Chromium and poppler-utils (pdftoppm):
# installed from the Debian packages when missing (as root, non-interactive).
APT := DEBIAN_FRONTEND=noninteractive apt-get

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,export,postgres]"
	touch $(STAMP)

browser:
	@command -v chromium >/dev/null && command -v pdftoppm >/dev/null || \
	  { command -v apt-get >/dev/null || { echo "install chromium and poppler-utils" >&2; exit 1; }; \
	    $(APT) update -qq && $(APT) install -y -qq --no-install-recommends \
	      chromium poppler-utils fonts-dejavu-core >/dev/null; }

demo: $(STAMP) browser
	$(PY) -m qa demo --out demo-output

test: $(STAMP) browser
	$(VENV)/bin/ruff check qa checks reports tests fixtures benchmarks
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_hu.py
	$(PY) benchmarks/gamma_vs_pymedphys.py --quick
	$(PY) benchmarks/bench_noise.py
	$(PY) benchmarks/bench_bias.py
	$(PY) benchmarks/bench_executor.py
	$(PY) benchmarks/bench_memory.py --no-per-check

clean:
	rm -rf $(VENV) demo-output qa.db
