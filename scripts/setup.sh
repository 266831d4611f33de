#!/usr/bin/env bash
# Everything `make demo` and `make test` (with --tests) need, from a fresh clone: a virtual environment holding
# the package and its tools, then the Fashion-MNIST files. Each step is skipped once it is done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.installed-$(cat pyproject.toml constraints.txt | cksum | cut -d" " -f1)"  # cksum: POSIX, on Linux and macOS alike

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
APT_UPDATED=
apt_install() {  # the package lists are read once per set-up, however many steps install from them
  if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq || return; APT_UPDATED=1; fi
  as_root apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version 2>&1)"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    if command -v apt-get >/dev/null; then
      echo "setup: installing python3-venv with apt-get"
      apt_install python3-venv
      "$PYTHON" -m venv "$VENV"
    else
      echo "setup: '$PYTHON -m venv' failed; install Python 3.10 or newer with its venv module, or set PYTHON=..." >&2
      exit 1
    fi
  fi
fi

if [ ! -f "$STAMP" ]; then
  echo "setup: installing fashion_nb and its tools into $VENV (torch is large: a few minutes the first time)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e '.[dev]'
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi

# Training on a CPU compiles two small C kernels (nbs/16_fused.ipynb); without a compiler it runs PyTorch's slower
# operations, so a missing one is installed where apt-get can, and setup goes on without it where it cannot.
if [ -z "${CC:-}" ] && ! command -v cc >/dev/null && command -v apt-get >/dev/null; then
  echo "setup: installing gcc with apt-get, for fashion_nb's C kernels"
  apt_install gcc libc6-dev ||
    echo "setup: gcc could not be installed; training will run PyTorch's operations instead of the C kernels" >&2
fi

# make test (`setup.sh --tests`) also opens every docs page in Chromium (tests/test_docs.py, skipped without one)
if [ "${1:-}" = --tests ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
   && ! command -v google-chrome >/dev/null && command -v apt-get >/dev/null; then
  echo "setup: installing Chromium with apt-get, for the test that opens the docs pages"
  apt_install chromium ||
    echo "setup: Chromium could not be installed; the test that opens the docs pages in it will be skipped" >&2
fi

# The package's own search decides whether the data is here (same order as at run time).
has_data() { "$VENV/bin/python" -c 'from fashion_nb.datafiles import find_data; find_data(download=False)' 2>/dev/null; }
if ! has_data; then
  if command -v apt-get >/dev/null; then
    echo "setup: installing Debian's dataset-fashion-mnist package (31 MB) with apt-get"
    apt_install dataset-fashion-mnist
  else
    echo "setup: downloading Fashion-MNIST with torchvision into data/"
    "$VENV/bin/python" -c 'from fashion_nb.datafiles import find_data; find_data(download=True)'
  fi
fi
"$VENV/bin/python" -c 'from fashion_nb.datafiles import find_data; files = find_data(download=False); print("setup: data in", sorted({str(p.parent) for p in files.values()})[0])'
