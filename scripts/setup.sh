#!/usr/bin/env bash
# Everything `make demo` and `make test` (with --tests) need, from a fresh clone: a virtual environment holding
# the package and its tools, then the Fashion-MNIST files. Each step is skipped once it is done.
#
# On Debian and Ubuntu some steps install system packages with apt-get (through sudo when not root). Each says what it
# runs, and why, before running it; NO_APT=1 skips them all, and set-up goes on without them (each step says how).
# PYTHON=... names the Python to build .venv with; without it, the first Python 3.10 or newer on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.installed-$(cat pyproject.toml constraints.txt | cksum | cut -d" " -f1)"  # cksum: POSIX, on Linux and macOS alike

# --- Python 3.10 or newer (pyproject.toml's requires-python)
python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
new_enough() { local v; v=$(python_version "$1") && [ $(( ${v%%.*} * 100 + ${v#*.} )) -ge 310 ]; }
if [ -z "${PYTHON:-}" ]; then  # macOS's own python3 is 3.9: look for a newer one before giving up
  for candidate in python3 python3.14 python3.13 python3.12 python3.11 python3.10; do
    if new_enough "$candidate"; then PYTHON=$candidate; break; fi
  done
  PYTHON=${PYTHON:-python3}
fi
FIX="install Python 3.10 or newer and run again with PYTHON=<it>, e.g. PYTHON=python3.12 make test"

# --- apt-get: each call says first what it runs and why; NO_APT=1 skips them all
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
APT_LISTS=  # "updated" once apt-get update has run, "failed" if it could not (a locked package database, no sudo rights)
apt_install() {  # apt_install WHY PACKAGE...: fails, saying why, where it may not or cannot run
  local why=$1 sudo=; shift
  [ "$(id -u)" -eq 0 ] || sudo="sudo "
  if [ "${NO_APT:-0}" != 0 ]; then echo "setup: NO_APT=$NO_APT: not running apt-get install $* ($why)"; return 1; fi
  if [ -n "$sudo" ] && ! command -v sudo >/dev/null; then
    echo "setup: not root and no sudo: not running apt-get install $* ($why)"; return 1
  fi
  if [ "$APT_LISTS" = failed ]; then
    echo "setup: apt-get update failed above: not running apt-get install $* ($why)"; return 1
  fi
  if [ -z "$APT_LISTS" ]; then  # the package lists are read once per set-up, however many steps install from them
    echo "setup: running ${sudo}apt-get update, then ${sudo}apt-get install -y $* ($why; NO_APT=1 skips every apt-get step)"
    as_root apt-get update -qq || { APT_LISTS=failed; return 1; }
    APT_LISTS=updated
  else
    echo "setup: running ${sudo}apt-get install -y $* ($why)"
  fi
  as_root apt-get install -y -qq "$@" >/dev/null
}

# --- the virtual environment, rebuilt when its Python is older than 3.10 (it would fail every later step)
if [ -x "$VENV/bin/python" ] && ! new_enough "$VENV/bin/python"; then
  old="Python $(python_version "$VENV/bin/python")" || old="a Python that does not run"
  if ! new_enough "$PYTHON"; then
    echo "setup: $VENV has $old, and $PYTHON is not 3.10 or newer either: $FIX" >&2
    exit 1
  fi
  echo "setup: $VENV has $old, fashion_nb needs 3.10 or newer: rebuilding it with $PYTHON"
  rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! new_enough "$PYTHON"; then
    echo "setup: $PYTHON is $(python_version "$PYTHON" || echo "not found"), fashion_nb needs Python 3.10 or newer: $FIX" >&2
    exit 1
  fi
  echo "setup: creating $VENV with $PYTHON (Python $(python_version "$PYTHON"))"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    if command -v apt-get >/dev/null && apt_install "Python's venv module" python3-venv; then
      "$PYTHON" -m venv "$VENV"
    else
      echo "setup: '$PYTHON -m venv' failed; install its venv module (Debian, Ubuntu: python3-venv), or set PYTHON=..." >&2
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
  apt_install "no C compiler; gcc builds fashion_nb's C kernels" gcc libc6-dev ||
    echo "setup: no gcc; training will run PyTorch's operations instead of the C kernels" >&2
fi

# make test (`setup.sh --tests`) also opens every docs page in Chromium (tests/test_docs.py, skipped without one)
if [ "${1:-}" = --tests ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
   && ! command -v google-chrome >/dev/null && command -v apt-get >/dev/null; then
  apt_install "no Chromium; a test opens every docs page in it" chromium ||
    echo "setup: no Chromium; the test that opens the docs pages in it will be skipped" >&2
fi

# The data, where the package's own search finds it (same order as at run time). Debian's and Ubuntu's package is
# tried first; without it (no apt-get, NO_APT=1, a failed install) torchvision downloads the files into data/.
data_in() {  # data_in True|False (download or not): print the folder holding the data, or one line saying why none does
  "$VENV/bin/python" -c "import sys
from fashion_nb.datafiles import DataError, find_data
try: files = find_data(download=$1)
except DataError as e: sys.exit(f'setup: {e}')
print('setup: data in', sorted({str(p.parent) for p in files.values()})[0])"
}
if ! data_in False >/dev/null 2>&1; then
  if command -v apt-get >/dev/null; then
    apt_install "no Fashion-MNIST yet; Debian's package of it, 31 MB" dataset-fashion-mnist ||
      echo "setup: dataset-fashion-mnist was not installed: downloading Fashion-MNIST with torchvision into data/ instead"
  else
    echo "setup: downloading Fashion-MNIST with torchvision into data/"
  fi
fi
data_in True  # downloads only when no usual place holds the files
