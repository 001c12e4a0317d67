# The two set-up commands (see README): `make demo` and `make test`. Both create .venv and install
# what they need; both are safe to re-run (the install is skipped while pyproject.toml is unchanged).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: demo test lint bench install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip
	# torch first, pinned: this takes the CPU wheel; a looser range would pull a multi-GB CUDA build.
	$(VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/pip install -q --disable-pip-version-check -e ".[export,demo,test,colbert]"
	# ColBERT's reference, PyLate 1.6.0 (the only release on the index), pins sentence-transformers==5.3.0,
	# and datasets (imported by PyLate at load) caps fsspec below the installed one: both go in without
	# their declared deps, so ST 5.7 stays. Their import-time deps are the [colbert] extra;
	# exporter.builders.export_onnx_colbert bridges the two ST 5.7 renames PyLate trips on.
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps pylate==1.6.0 datasets==4.8.5
	rm -f $(VENV)/.installed-* && touch $@

# Export the embedded default (all-MiniLM-L6-v2 @ 1110a243) from a hash-checked local Hub cache.
demo: $(STAMP)
	$(VENV)/bin/exporter seed-default
	$(VENV)/bin/exporter export

test: $(STAMP)
	bash .ci/install-system-deps
	$(VENV)/bin/ruff check exporter tests
	$(VENV)/bin/mypy  # over exporter/, configured in pyproject.toml [tool.mypy]
	$(VENV)/bin/actionlint .github/workflows/*.yml
	# one worker per core; a module's tests stay on one worker, so its shared export is built once
	$(VENV)/bin/python -m pytest -q -n auto --dist loadscope

lint: $(STAMP)
	$(VENV)/bin/ruff check exporter tests
	$(VENV)/bin/ruff format --check exporter tests
	$(VENV)/bin/mypy
	$(VENV)/bin/actionlint .github/workflows/*.yml
