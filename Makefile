# dehaze_ros, no-ROS path: everything runs from a local virtualenv that this Makefile creates
# (and reuses). On a real ROS 2 machine use colcon instead (README.md, "Install on a ROS 2 machine").
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REQS   := requirements.txt requirements-ros-pypi.txt requirements-dev.txt
# This machine's CPU build of torch (requirements.txt accepts any torch >= 2.1, so that CUDA and
# Jetson installs keep theirs); without the pin pip would pick a CUDA wheel of several GB.
CONSTRAINTS := constraints-cpu.txt

# Large images between processes need Fast DDS's LARGE_DATA transports (METHOD.md: the default
# transports delivered 0 of 80 best-effort 640x480 frames between two processes here). The demo
# and the tests additionally load config/fastdds_localhost.xml (dehaze_ros.tools.demo.local_dds_environment):
# loopback-only discovery with 16 MiB shared memory, because ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# would replace LARGE_DATA with a 512 KiB shared-memory segment that 640x480 frames do not fit.
export FASTDDS_BUILTIN_TRANSPORTS ?= LARGE_DATA
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast benchmark venv clean

demo: $(STAMP)  ## the node on the bundled camera stream; writes demo_output/
	$(PY) -m dehaze_ros.tools.demo

test: $(STAMP)  ## the whole test suite (CPU)
	$(PY) -m pytest -q test

test-fast: $(STAMP)  ## the fast tier: no ROS processes, no training runs (markers in test/conftest.py)
	$(PY) -m pytest -q test -m "not ros and not training"

benchmark: $(STAMP)  ## latency table of every model variant and DCP on this device
	$(PY) -m dehaze_ros.tools.benchmark

venv: $(STAMP)

# The stamp depends on the requirement files, so editing one reinstalls; otherwise .venv is reused.
$(STAMP): $(REQS) $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing dependencies into $(VENV) (log: $(VENV)/install.log) ..."
	@$(PY) -m pip install --disable-pip-version-check -q -c $(CONSTRAINTS) $(foreach r,$(REQS),-r $(r)) \
		> $(VENV)/install.log 2>&1 || { tail -n 40 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

clean:
	rm -rf $(VENV) demo_output .pytest_cache
