# The two commands of the README are `make demo` and `make test`; each sets itself up first.
SHELL := /bin/bash
BIN := .venv/bin
DEMO_OUT := runs/demo

.PHONY: help setup demo pages beyond test test-slow lab export bench bench-batch bench-gpu bench-profile bench-accuracy faster docs tensorboard-screenshots

help:
	@echo "make demo   - train at the tutorial's settings on the real data (papermill) into $(DEMO_OUT)/"
	@echo "make test   - nbdev-test over every notebook, then pytest"
	@echo "make pages  - make demo, then regenerate every output the docs pages show (a few minutes)"
	@echo "make beyond - the sweep of the 'Beyond the tutorial' page, its results and the page (~125 minutes on 2 cores)"
	@echo "make lab    - open the notebooks in JupyterLab"
	@echo "make docs   - the docs site with Quarto (nbdev-docs), else an HTML preview in _docs_preview/"
	@echo "make bench  - time the tutorial's loop against fashion_nb's (11 seeds, ~12 minutes on 2 cores)"
	@echo "make bench-batch - time 8 small runs with the papermill command against fashion-nb batch (~1 minute on 2 cores)"
	@echo "make faster - the sweep of the 'Faster to 0.94' page (sweeps/faster.yaml, 4 settings x 3 seeds), its results and the page (~90 minutes on 2 cores)"
	@echo "make bench-accuracy - time to accuracy: the tutorial's loop, 06's recipe and 07's (3 seeds), and 07's by the lesson's plain loop (~45 minutes on 2 cores)"
	@echo "make bench-profile - where an epoch of the better network's training goes: forward, backward, optimizer, scoring (~2 minutes)"
	@echo "make bench-gpu - on a machine with a CUDA GPU: its tests, then training with CUDA graphs against eager steps (gpu.json)"
	@echo "make tensorboard-screenshots - the TensorBoard page's two screenshots, from a real TensorBoard in headless Chromium (~1 minute)"
	@echo "make export - notebooks -> fashion_nb/, clean notebook metadata, and the end-to-end notebook's copy in the package"
	@echo "Each sets itself up first (scripts/setup.sh), saying before each apt-get it runs; NO_APT=1 make ... runs none."

# The set-up of every target (scripts/setup.sh): on Debian and Ubuntu it installs gcc, Chromium (make test) and the data
# with apt-get, through sudo when not root, announcing each; NO_APT=1 (in the environment or on make's command line) skips them.
setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/fashion-nb run -p epochs 5 -p batch_size 100 -p lr 0.01 -p seed 0 -p limit 0 --out $(DEMO_OUT)

# The pages show real runs: the demo's outputs go into the end-to-end page, every other notebook is rerun in place.
pages: demo
	$(BIN)/python scripts/refresh_pages.py
	$(BIN)/nbdev-clean
	$(BIN)/python scripts/package_notebook.py
	$(BIN)/python scripts/readme_from_index.py

# The ablation of nbs/06_beyond.ipynb (sweeps/beyond.yaml, three seeds a setting) through fashion-nb batch, the chosen
# setting once more for ten minutes, the results that page reads (nbs/results/beyond/), then the page's outputs.
# Finished runs are kept in runs/beyond*/: run again after an interruption, it runs only the rest.
beyond: setup
	$(BIN)/python scripts/beyond.py
	$(BIN)/python scripts/refresh_pages.py nbs/06_beyond.ipynb
	$(BIN)/nbdev-clean --fname nbs/06_beyond.ipynb

# The fused kernels' page checks the kernels against PyTorch's operations. Where none can be built (no C compiler, not
# Linux, FASHION_NB_FUSED=0), training runs PyTorch's operations, which every other page checks, and that page is skipped
# with a line saying why; a compiler that fails on the kernels' source is a defect, and the page then fails.
test:
	@scripts/setup.sh --tests
	@why=$$($(BIN)/python -c 'from fashion_nb.fused import kernel_unavailable; print(kernel_unavailable() or "")'); \
	case "$$why" in \
	  "no C compiler"*|"built on Linux only"*|"FASHION_NB_FUSED=0"*) skip='^([_.]|16_fused)'; \
	    echo "test: skipping nbs/16_fused.ipynb, the fused kernels' checks: $$why";; \
	  *) skip='^[_.]';; \
	esac; \
	echo "$(BIN)/nbdev-test --skip-file-re '$$skip'"; $(BIN)/nbdev-test --skip-file-re "$$skip"
	$(BIN)/pytest -q tests

test-slow: setup
	$(BIN)/nbdev-test --flags slow

# Jupyter refuses to start as root without --allow-root; containers often run as root
lab: setup
	$(BIN)/jupyter lab nbs $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

export: setup
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	$(BIN)/python scripts/package_notebook.py

bench: setup
	$(BIN)/python bench/run.py
	$(BIN)/python bench/step.py

bench-batch: setup
	$(BIN)/python bench/batch.py

bench-accuracy: setup
	$(BIN)/python bench/time_to_accuracy.py

# The sweep of nbs/07_faster.ipynb through fashion-nb batch (finished runs in runs/faster/ are kept: run again after an
# interruption and it runs only the rest), the results that page reads (nbs/results/faster/), then the page's outputs.
faster: setup
	$(BIN)/fashion-nb batch -f sweeps/faster.yaml --out runs/faster --workers 1 --no-progress
	$(BIN)/python scripts/faster_results.py
	$(BIN)/python scripts/refresh_pages.py nbs/07_faster.ipynb
	$(BIN)/nbdev-clean --fname nbs/07_faster.ipynb

bench-profile: setup
	$(BIN)/python bench/better_profile.py

# On a GPU: its tests, then graphed against eager training (bench/gpu.py, about a minute on an H200, three seeds: it must
# fit a short lease of the machine). The older comparisons with the tutorial's loop run there by hand:
# bench/run.py --device cuda, bench/batch.py --out bench/results/batch_cuda.json, bench/step.py --device cuda --no-compile
GPU_SEEDS ?= 0 1 2
bench-gpu: setup
	$(BIN)/python -m pytest -q tests -k cuda
	$(BIN)/python bench/gpu.py --seeds $(GPU_SEEDS)

# The TensorBoard page's screenshots (nbs/images/tensorboard_*.png): a tiny sweep's logs shown by a real TensorBoard
# server on localhost, photographed in headless Chromium
tensorboard-screenshots: setup
	$(BIN)/python scripts/tensorboard_screenshots.py

# With Quarto: nbdev's site in _docs/, checked in Chromium. Without: nbdev-proc-nbs, then plain HTML pages.
docs: setup
	@if command -v quarto >/dev/null; then \
	  $(BIN)/nbdev-docs && $(BIN)/python scripts/preview_docs.py check _docs; \
	else \
	  echo "docs: Quarto is not installed; building the HTML preview instead (https://quarto.org to build the site)"; \
	  $(BIN)/nbdev-proc-nbs >/dev/null && $(BIN)/python scripts/preview_docs.py render _proc _docs_preview; \
	fi
