"""On a checkout where `make demo` never ran (a fresh clone: no runs/), the inference and confusion pages print the
numbers they were committed with: they score the main job's committed model, nbs/results/demo_model.pt, and a page
that fell back to training a stand-in would print other accuracies and counts."""
import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

from fashion_nb.core import project_root
from fashion_nb.run import kernel_config
from test_pages import is_hidden

ROOT = project_root()
PAGES = ['03_inference', '04_confusion']


def checkout_files() -> list[str]:
    "What a clone of this working tree holds: the tracked files as they are now, and the new ones git does not ignore."
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode()
    return [p for p in listed.split('\0') if p and (ROOT/p).is_file()]  # is_file: a tracked file deleted since


@pytest.fixture(scope='module')
def fresh_checkout(tmp_path_factory) -> Path:
    "A copy of the checkout's files without runs/ or any other ignored folder, as a fresh clone would have them."
    if not (ROOT/'.git').exists(): pytest.skip("not a git checkout: nothing to clone")
    dest = tmp_path_factory.mktemp('clone')
    for name in checkout_files():
        (dest/name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT/name, dest/name)
    assert not (dest/'runs').exists() and (dest/'nbs'/'results'/'demo_model.pt').is_file()
    return dest


def printed(cell) -> list[str]:
    "The text a reader sees under a code cell: what it printed and the value it shows (figures' images left out)."
    texts = []
    for output in cell.outputs:
        if output.output_type == 'stream' and output.name == 'stdout': texts.append(output.text)
        elif output.output_type in ('execute_result', 'display_data'): texts.append(output.data.get('text/plain', ''))
    return texts


def visible_cells(nb) -> list:
    "The code cells a reader sees; the hidden ones hold checks that nbdev-test runs on the checkout itself."
    return [c for c in nb.cells if c.cell_type == 'code' and not is_hidden(c)]


def client_for(notebook: Path) -> NotebookClient:
    "A client that runs the visible cells of `notebook` where it lies; first, a cell that checks which package it uses."
    nb = nbformat.read(notebook, as_version=4)
    clone = notebook.parent.parent
    # the kernel must import the clone's package, not the checkout's, which could find the checkout's runs/
    nb.cells = [nbformat.v4.new_code_cell(
        "import fashion_nb, pathlib\n"
        f"assert pathlib.Path(fashion_nb.__file__).resolve().is_relative_to({str(clone.resolve())!r}), fashion_nb.__file__"),
        *visible_cells(nb)]
    return NotebookClient(nb, timeout=600, kernel_name='python3', config=kernel_config(),
                          resources={'metadata': {'path': str(notebook.parent)}})


@pytest.fixture(scope='module')
def fresh_runs(fresh_checkout, real_data_available) -> dict:
    "Each page's visible cells, run in the clone; the two side by side, so that start-up, plotting and waiting overlap."
    data_dir = Path(next(iter(real_data_available.values()))).parent
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(fresh_checkout), os.environ.get('PYTHONPATH')])),
           'FASHION_NB_DATA': str(data_dir)}  # the data this checkout found, wherever it lies (a clone has no data/)
    clients = {name: client_for(fresh_checkout/'nbs'/f'{name}.ipynb') for name in PAGES}
    async def run_all(): await asyncio.gather(*(c.async_execute(env=env) for c in clients.values()))
    asyncio.run(run_all())
    ran = {}
    for name, client in clients.items():
        nb, _ = CoalesceStreamsPreprocessor().preprocess(client.nb, {})
        ran[name] = nb.cells[1:]  # without the check of the package
    return ran


@pytest.mark.parametrize('name', PAGES)
def test_a_fresh_clone_prints_the_committed_numbers(name, fresh_runs):
    committed = visible_cells(nbformat.read(ROOT/'nbs'/f'{name}.ipynb', as_version=4))
    fresh = fresh_runs[name]
    assert len(fresh) == len(committed)
    differ = [f"visible code cell {i}:\n  committed: {printed(old)!r}\n  fresh:     {printed(new)!r}"
              for i, (old, new) in enumerate(zip(committed, fresh)) if printed(old) != printed(new)]
    assert not differ, '\n'.join(differ)
    assert sum(len(printed(c)) for c in committed) > 10  # the comparison held many outputs, not none


def test_the_pages_show_the_main_jobs_model():
    "The committed pages say they scored the committed model, and print its test accuracy, the main job's."
    import json
    demo = json.loads((ROOT/'nbs'/'results'/'demo_metrics.json').read_text())
    line = f"results/demo_model.pt: {demo['params']['epochs']} epochs on 60,000 training images"
    accuracy = f"test accuracy {demo['test_accuracy']:.4f}"
    for name in PAGES:
        texts = [t for c in visible_cells(nbformat.read(ROOT/'nbs'/f'{name}.ipynb', as_version=4)) for t in printed(c)]
        assert any(t.startswith(line) and accuracy in t for t in texts), (name, texts[:3])
