# Two commands on a fresh clone: `make bench` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-workers bench fuzz lint deps ceph-deps clean

# A venv with pymsgr (editable, C fast path built) and everything tests and bench need.
$(STAMP): setup.py pyproject.toml msgr/_build_fastpath.py $(wildcard csrc/*.c csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77'
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

deps: $(STAMP)

# Real Ceph peers for the interop tests (Debian packages), installed only when missing.
ceph-deps:
	@if ! command -v ceph-mon >/dev/null || ! command -v ceph >/dev/null || ! command -v tshark >/dev/null || ! command -v ceph-osd >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ceph-mon ceph-osd ceph-common tshark; \
		else \
			echo "ceph-mon/ceph-osd/ceph/tshark missing and cannot apt-get install them: interop tests will skip"; \
		fi; \
	fi

test: deps ceph-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The whole suite with ms_async_op_threads = 1 and = 3 wherever a test does not set it
# (MSGR_TEST_ASYNC_OP_THREADS, tests/conftest.py): one worker and several must behave alike.
test-workers: deps ceph-deps
	MSGR_TEST_ASYNC_OP_THREADS=1 $(PY) -m pytest -q $(PYTEST_ARGS)
	MSGR_TEST_ASYNC_OP_THREADS=3 $(PY) -m pytest -q $(PYTEST_ARGS)

# Static checks (.ci/run runs them before the tests; `make test` does not need them).
lint: deps
	$(PY) -m ruff check msgr eventcenter tests bench
	$(PY) -m mypy -p msgr -p eventcenter

bench: deps
	$(PY) -m msgr bench $(BENCH_ARGS)

fuzz: deps
	MSGR_FUZZ_PROFILE=long $(PY) -m pytest -q -p no:cacheprovider tests/fuzz tests/test_race_stress.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info msgr/_fastpath*.so msgr/_hotcall*.so msgr/_fastpath.c .hypothesis .pytest_cache .mypy_cache .ruff_cache
