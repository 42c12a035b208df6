# Two commands do all set-up (README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of this release lies on the project's machines; any other
# release would download a multi-GB CUDA build. Installed first, explicitly.
TORCH_VERSION := 2.13.0

.PHONY: setup demo test corpus models clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev]'
	@$(PY) -c "import torch, sys; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '$(TORCH_VERSION)' else 'torch ' + v + ' installed, expected $(TORCH_VERSION)')"
	touch $@

# The main job on the bundled fixtures, on a copy in build/demo: findings, the diff for review,
# the fix, then every program run under torch before and after (scripts/demo.py).
demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest

# gradfix check over the installed torch's own sources (slow; run before resolving engine work).
corpus: setup
	$(PY) scripts/corpus_report.py

# Issue 4's check that a default `gradfix fix` changes nothing real models notice: torch.nn
# building blocks and transformers architectures (small configs, nothing downloaded), run with
# the original and the fixed library sources and compared bit for bit. transformers is pinned
# and does not depend on torch, so the installed torch stays the one above.
TRANSFORMERS_VERSION := 5.23.0

models: setup
	$(PY) -m pip install --quiet transformers==$(TRANSFORMERS_VERSION)
	@$(PY) -c "import torch, sys; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '$(TORCH_VERSION)' else 'torch ' + v + ' installed, expected $(TORCH_VERSION)')"
	$(PY) scripts/model_equivalence.py

clean:
	rm -rf $(VENV) build .pytest_cache
