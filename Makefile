# The two commands of the README:
#   make demo   install everything, then run the main job
#   make test   install everything, then run the test suite
# PYTHON may point at any Python >= 3.10 (a venv's python works too).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
RUN := runs/demo

.PHONY: install demo test test-all bench

install:
	# the CPU build of torch first, so that nothing pulls a multi-GB CUDA build
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[dev]"

demo: install
	$(PYTHON) -m trickbag.cli schedule cosine -p learning_rate=0.1 -p total_steps=1000 -p warmup_steps=100 \
		-p final_lr=0.001 --steps 1000 --plot $(RUN)/cosine.png
	$(PYTHON) -m trickbag.cli inspect-init --depth 20 --plot $(RUN)/init.png

test: install
	$(PYTHON) -m pytest -q

test-all: install
	$(PYTHON) -m pytest -q -m "slow or not slow"

bench: install
	$(PYTHON) benchmarks/schedules.py
