# The project's two commands: `make demo` and `make test`. Each sets up .venv.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench stress clean

$(STAMP): pyproject.toml
	@./tools/ensure-venv.sh $(PYTHON) $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	@touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check zaqar_otel tests

stress: $(STAMP)
	$(VENV)/bin/python -m pytest tests/stress $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python -m tests.bench.run

demo: $(STAMP)
	$(VENV)/bin/python -m tools.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .tox .pytest_cache .hypothesis
