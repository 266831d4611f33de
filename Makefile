# The two commands of the README are `make demo` and `make test`; each sets itself up first.
SHELL := /bin/bash
BIN := .venv/bin
DEMO_OUT := runs/demo

.PHONY: help setup demo test test-slow lab export bench

help:
	@echo "make demo   - train at the tutorial's settings on the real data (papermill) into $(DEMO_OUT)/"
	@echo "make test   - nbdev-test over every notebook, then pytest"
	@echo "make lab    - open the notebooks in JupyterLab"
	@echo "make bench  - time the tutorial's loop against fashion_nb's (3 seeds, ~10 minutes on 2 cores)"
	@echo "make export - notebooks -> fashion_nb/ and clean notebook metadata (nbdev-export, nbdev-clean)"

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/fashion-nb run -p epochs 5 -p batch_size 100 -p lr 0.01 -p seed 0 -p limit 0 --out $(DEMO_OUT)

test: setup
	$(BIN)/nbdev-test
	$(BIN)/pytest -q tests

test-slow: setup
	$(BIN)/nbdev-test --flags slow

lab: setup
	$(BIN)/jupyter lab nbs

export: setup
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean

bench: setup
	$(BIN)/python bench/run.py
