# The two commands of README.md: `make demo` and `make test`. Both install into a project venv (.venv) that
# they create, so they work the same on a fresh machine and where the system pip refuses (PEP 668).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo lint test test-ros

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q -c constraints.txt -e ".[test,onnx]"

demo: install
	$(VENV)/bin/stt demo --out demo_out

lint: install
	$(PY) -m ruff check stt_ros tests launch

# The real-ROS tests: a colcon build and launch tests against it (tests/ros_live/run.sh says when it skips).
test-ros: install
	STT_OFFLINE_PYTHON=$(abspath $(PY)) bash tests/ros_live/run.sh

test: install lint
	$(PY) -m pytest -m "not slow and not cuda" -q -p no:cacheprovider
	$(MAKE) --no-print-directory test-ros
