"""The launch tests here run under `launch_test` with a colcon-built package (run.sh, called by `make test`),
not under the project venv's pytest: nothing in this folder is collected by it."""

collect_ignore_glob = ["*.py"]
