# The two commands of the README:
#   make demo   install everything, then run the main job
#   make test   install everything, then run the test suite
# PYTHON may point at any Python >= 3.10 (a venv's python works too).
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test bench

install:
	# the CPU build of torch first, so that nothing pulls a multi-GB CUDA build
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[dev]"

demo: install
	$(PYTHON) -m trickbag.cli train --recipe fashion-mnist

test: install
	$(PYTHON) -m pytest -q

bench: install
	for b in schedules augment precision muon_iteration trainer_overhead doctor_overhead fashion_mnist startup; do $(PYTHON) benchmarks/$$b.py; done
	$(PIP) install --quiet -e ".[bench]"  # lr_finder.py compares with torch-lr-finder
	$(PYTHON) benchmarks/lr_finder.py
	$(PYTHON) benchmarks/race.py --seeds 3  # about 20 minutes on 2 cores: the reference loop vs the default recipe
