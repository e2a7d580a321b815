# Two commands do all set-up on a fresh machine (Python >= 3.10 and pip): `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export UV_LINK_MODE ?= copy

.PHONY: demo test lint docs bench clean-venv

demo: $(VENV)/.installed
	$(VENV)/bin/ffx demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check ffx tests bench
	$(VENV)/bin/python -m pytest -q

# The docs site (mkdocs.yml, docs/) into site/; --strict fails on any warning: a broken link or anchor, a
# page left out of the nav, a command without help text (scripts/mkdocs_hooks.py). Not --quiet: it hides
# the warnings, and --strict then has none to fail on.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check ffx tests bench

.tools/bin/uv:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target .tools uv==$(UV_VERSION)

# The lock is `uv pip compile` output: exact versions, no index or download address. Bytecode is
# compiled at install: where PYTHONDONTWRITEBYTECODE is set (it is on the machines this project
# is built on), every process would otherwise compile torch's sources again (about 6 s a command).
$(VENV)/.installed: requirements.lock pyproject.toml | $(UV)
	test -x $(VENV)/bin/python || $(UV) venv --python $(PYTHON) $(VENV)
	$(UV) pip sync --compile-bytecode --python $(VENV)/bin/python requirements.lock
	$(UV) pip install --python $(VENV)/bin/python --no-deps -e .
	touch $@

clean-venv:
	rm -rf $(VENV) .tools
