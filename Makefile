# ALARA-QA: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv on a fresh machine; torch==2.13.0 (CPU wheel) goes in first so that
# nothing pulls a CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,export,postgres]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m qa demo --out demo-output

test: $(STAMP)
	$(VENV)/bin/ruff check qa checks reports tests fixtures benchmarks
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_hu.py
	$(PY) benchmarks/gamma_vs_pymedphys.py --quick
	$(PY) benchmarks/bench_noise.py
	$(PY) benchmarks/bench_bias.py

clean:
	rm -rf $(VENV) demo-output qa.db
