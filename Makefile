# The two commands of README.md: `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test lint test-numpy1

install:
	$(PIP) install -q -c constraints.txt -e ".[test]"

demo: install
	stt demo --out demo_out

lint:
	$(PYTHON) -m ruff check stt_ros tests launch

test: install lint
	$(PYTHON) -m pytest -m "not slow and not cuda" -q -p no:cacheprovider

# ROS 2 Humble/Jazzy ship numpy 1.21/1.26 (cv_bridge breaks under numpy 2): the ROS-free core must work
# there too. Runs the core and node-logic tests in a venv that sees this install but pins numpy 1.26.
test-numpy1: install
	$(PYTHON) -m venv --system-site-packages .venv-numpy1
	.venv-numpy1/bin/python -m pip install -q "numpy==1.26.4"
	.venv-numpy1/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not cuda" \
		tests/test_foveation.py tests/test_predictor.py tests/test_invariants.py tests/pipeline tests/bag
