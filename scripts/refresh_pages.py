"""Regenerate every committed output of the docs pages from real runs (what `make pages` calls after `make demo`).

- The end-to-end page gets the outputs of `make demo`'s executed notebook (runs/demo/end_to_end.ipynb): the page
  shows the main job at the tutorial's settings, while the notebook's own parameter defaults stay the quick ones
  that nbdev-test uses. papermill's copy has one extra cell (the injected parameters); every other cell must match
  the source cell for cell, or nothing is written.
  Its confusion matrix is copied to nbs/images/ for the README, and its metrics.json to nbs/results/demo_metrics.json
  for the training page, which shows the main job's numbers without training for minutes under nbdev-test. Its trained
  model goes to nbs/results/demo_model.pt, which the inference and confusion pages score: committed, so that a
  checkout without runs/ shows the same numbers.
- Every other notebook is executed in place, in nbs/, as a reader would run it (slow cells included).
- Progress bars (tqdm's lines on stderr) are live feedback, not results: they are dropped. Any other stderr
  output, and any error, stays in the notebook, where the page check (tests/test_pages.py) reports it.

    .venv/bin/python scripts/refresh_pages.py [NOTEBOOK ...]   # default: every notebook in nbs/
"""
import json
import re
import sys
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

from fashion_nb.core import atomic_path
from fashion_nb.run import kernel_config  # the encrypted kernel channel papermill runs get, and no warning about it

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'
END_TO_END = NBS/'05_end_to_end.ipynb'
DEMO = ROOT/'runs'/'demo'/'end_to_end.ipynb'
DEMO_MODEL = NBS/'results'/'demo_model.pt'  # the demo's model, as the pages 03 and 04 read it
PROGRESS = re.compile(r'\d+%\|')  # tqdm's bar: "epoch 1/5:  40%|████      | 240/600 ..."


def is_progress(output) -> bool:
    "A stderr stream that holds nothing but progress bars (or the line ends a bar leaves behind)."
    if output.output_type != 'stream' or output.name != 'stderr': return False
    return all(PROGRESS.search(l) for l in re.split(r'[\r\n]', output.text) if l.strip())


def without_progress(nb):
    "The notebook with its streams coalesced and its progress-bar streams removed."
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    for cell in nb.cells:
        if cell.cell_type == 'code': cell.outputs = [o for o in cell.outputs if not is_progress(o)]
    return nb


def write(nb, path: Path):
    with atomic_path(path) as tmp: nbformat.write(nb, str(tmp))


def store_model(run_dir: Path = DEMO.parent):
    "Copy the demo's trained model to nbs/results/, after checking that it is the model its metrics.json describes."
    model, metrics = run_dir/'model.pt', json.loads((run_dir/'metrics.json').read_text())
    saved = torch.load(model, map_location='cpu', weights_only=True)['metrics'].get('test_accuracy')
    if saved != metrics['test_accuracy']:  # both are written by one run: a mismatch means a run cut short
        sys.exit(f"{model} (test accuracy {saved}) is not the model of {run_dir/'metrics.json'} "
                 f"({metrics['test_accuracy']}); run `make demo` again")
    with atomic_path(DEMO_MODEL) as tmp: tmp.write_bytes(model.read_bytes())


def store_demo(executed_path: Path = DEMO):
    "Copy the outputs of the demo's executed notebook into the end-to-end notebook."
    source = nbformat.read(END_TO_END, as_version=4)
    executed = nbformat.read(executed_path, as_version=4)
    ran = [c for c in executed.cells if 'injected-parameters' not in c.metadata.get('tags', [])]
    if [c.source for c in ran] != [c.source for c in source.cells]:
        sys.exit(f"{executed_path} was run from another version of {END_TO_END.name}; run `make demo` again")
    errors = [o for c in ran if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    if errors: sys.exit(f"{executed_path} holds an error ({errors[0].ename}); fix the run first")
    store_model(executed_path.parent)  # first: it checks the run, and a failed check leaves every page as it was
    for mine, theirs in zip(source.cells, ran):
        if mine.cell_type == 'code': mine.outputs, mine.execution_count = theirs.outputs, theirs.execution_count
    write(without_progress(source), END_TO_END)
    figure = executed_path.parent/'confusion_matrix.png'  # the home page's and the README's headline figure
    with atomic_path(NBS/'images'/'demo_confusion_matrix.png') as tmp: tmp.write_bytes(figure.read_bytes())
    metrics = executed_path.parent/'metrics.json'
    with atomic_path(NBS/'results'/'demo_metrics.json') as tmp: tmp.write_bytes(metrics.read_bytes())
    print(f"{END_TO_END.name}: outputs of {executed_path.relative_to(ROOT)}")


def execute(path: Path):
    "Run a notebook in nbs/ from top to bottom and store its outputs in it."
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name='python3', resources={'metadata': {'path': str(NBS)}},
                   config=kernel_config()).execute()
    write(without_progress(nb), path)
    print(f"{path.name}: executed")


if __name__ == '__main__':
    chosen = [NBS/Path(a).name for a in sys.argv[1:]] or sorted(NBS.glob('[!_]*.ipynb'))
    chosen.sort(key=lambda notebook: notebook != END_TO_END)  # the demo's results first: other pages read them
    for notebook in chosen:
        store_demo() if notebook == END_TO_END else execute(notebook)
