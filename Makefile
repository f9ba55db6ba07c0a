# The two commands of README.md: `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test lint

install:
	$(PIP) install -q -c constraints.txt -e ".[test]"

demo: install
	stt demo --out demo_out

lint:
	$(PYTHON) -m ruff check stt_ros tests launch

test: install lint
	$(PYTHON) -m pytest -m "not slow and not cuda" -q -p no:cacheprovider
