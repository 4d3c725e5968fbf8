# One set-up path: `make demo` and `make test` create .venv (pinned CPU torch) on first use.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench docs

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/infscope demo

# test: the fast suite (-m "not slow"), every example of examples/ included at a tiny size.
# test-all: also the slow tests, which run every example's README as written (minutes each).
test: $(STAMP)
	bash scripts/install_browser.sh
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	bash scripts/install_browser.sh
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) bench/extraction_throughput.py

# API reference (pdoc, offline) in build/api/ (git-ignored): open build/api/index.html.
docs: $(STAMP)
	$(PY) scripts/api_docs.py --out build/api
