"""The home page's way in without `make` (Windows, Colab, any machine): a new virtual environment, `pip install -e`, then
the notebooks in Jupyter. Followed here as a reader would, in a fresh copy of the checkout: the package installs into a
new environment, finds the data by itself, and the first lesson runs headless from that environment's own Jupyter.

PyTorch and the other dependencies are not downloaded again (several GB): the new environment sees the project's
environment's packages through one plain path line, as tests/test_wheel.py does, so that fashion_nb itself can come only
from the `pip install -e` under test (the project's own editable install is not read)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import torch

import fashion_nb.datafiles as datafiles
from conftest import copy_checkout
from fashion_nb.core import project_root

ROOT = project_root()
HOME = ROOT/'nbs'/'index.ipynb'


def pip_route(markdown: str) -> list[str]:
    "The commands of the home page's shell block that installs with pip, one per line, comments dropped."
    blocks = [b for b in re.findall(r'```sh\n(.*?)```', markdown, re.S) if 'pip install' in b]
    assert len(blocks) == 1, f"the home page should give one shell block with `pip install`, found {len(blocks)}"
    return [line.split('#')[0].strip() for line in blocks[0].splitlines() if line.split('#')[0].strip()]


def same(a, b) -> bool: return Path(a).resolve() == Path(b).resolve()


def test_the_home_page_gives_the_pip_route():
    home = '\n\n'.join(c.source for c in nbformat.read(HOME, as_version=4).cells if c.cell_type == 'markdown')
    commands = pip_route(home)
    assert 'python -m venv .venv' in commands
    assert any(re.fullmatch(r'pip install (-c constraints\.txt )?-e "\.\[dev\]"', c) for c in commands), commands
    assert 'jupyter lab nbs' in commands
    assert 'dev' in re.search(r'\[project\.optional-dependencies\](.*?)\n\[', (ROOT/'pyproject.toml').read_text(), re.S).group(1)


def test_pip_install_then_the_first_lesson_runs_in_jupyter(tmp_path, real_data_available):
    (tmp_path/'clone').mkdir()
    checkout = copy_checkout(tmp_path/'clone')  # a fresh clone: no data/, no runs/, no .venv/
    venv = tmp_path/'clone'/'.venv'
    # python -m venv .venv; without its own pip and setuptools, which would hide the project environment's newer ones
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv], check=True, capture_output=True)
    python = venv/'bin'/'python'
    site = next(venv.glob('lib/python*/site-packages'))
    (site/'project_packages.pth').write_text(str(Path(torch.__file__).parent.parent) + '\n')
    env = {k: v for k, v in os.environ.items() if k not in ('FASHION_NB_DATA', 'VIRTUAL_ENV', 'PYTHONPATH')}
    places = [checkout/'data'/'FashionMNIST'/'raw', datafiles.SYSTEM_DATA_DIR]  # where the search looks, in order
    if datafiles.idx_files_in(places[1]) is None:  # no system copy: the files go where torchvision's download puts them
        places[0].mkdir(parents=True)
        for path in real_data_available.values(): (places[0]/path.name).symlink_to(path)
    # a user's own kernel named python3 would run another Python: only the environment's own is to be found
    env.update(XDG_CACHE_HOME=str(tmp_path/'cache'), JUPYTER_RUNTIME_DIR=str(tmp_path/'runtime'),
               JUPYTER_DATA_DIR=str(tmp_path/'jupyter'),
               PATH=f"{venv/'bin'}{os.pathsep}{env.get('PATH', '')}")  # what activating the environment does
    def run(*args, **kw):
        result = subprocess.run(args, cwd=checkout, env=env, capture_output=True, text=True, timeout=300, **kw)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout
    # pip install -e ".[dev]": the package from this clone; its dependencies are the project environment's
    run(python, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--quiet', '-e', '.')
    found = json.loads(run(python, '-c', 'import json, sys, fashion_nb\nfrom fashion_nb.data import load_split\n'
                                         'from fashion_nb.datafiles import find_data\n'
                                         'folder = str(next(iter(find_data().values())).parent)\n'
                                         'print(json.dumps([sys.prefix, fashion_nb.__file__, len(load_split("test")), folder]))'))
    assert same(found[0], venv) and same(Path(found[1]).parent, checkout/'fashion_nb') and found[2] == 10_000, found
    assert any(same(found[3], place) for place in places), found  # found by the search, with no setting
    run(python, '-m', 'jupyterlab', '--version')  # what `jupyter lab nbs` starts
    lesson = nbformat.read(checkout/'nbs'/'00_data.ipynb', as_version=4)  # plus one cell: where its kernel runs
    lesson.cells.append(nbformat.v4.new_code_cell('import sys, fashion_nb\nprint(sys.prefix)\nprint(fashion_nb.__file__)'))
    nbformat.write(lesson, checkout/'nbs'/'00_data.ipynb')
    run(python, '-m', 'nbconvert', '--to', 'notebook', '--execute', '--output-dir', tmp_path/'out',
        '--ExecutePreprocessor.kernel_name=python3', '--ExecutePreprocessor.timeout=300', 'nbs/00_data.ipynb')
    executed = nbformat.read(tmp_path/'out'/'00_data.ipynb', as_version=4)
    ran = [c for c in executed.cells if c.cell_type == 'code']
    assert all(c.execution_count for c in ran), 'a cell of 00_data did not run'
    assert not [o for c in ran for o in c.outputs if o.output_type == 'error']
    shown = [o for c in ran for o in c.outputs if 'image/png' in o.get('data', {})]
    assert shown, '00_data drew no figure'
    prefix, package = ran[-1].outputs[0].text.split()
    assert same(prefix, venv) and same(Path(package).parent, checkout/'fashion_nb'), (prefix, package)
