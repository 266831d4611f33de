"""Three mistakes that give wrong answers without an error, each caught here: a `--sample` draw that ignores
`--sample-seed`, a training shuffle that ignores the run's `seed` (seeds would then change only the initial weights,
and the spread over seeds would be understated), and a run received from a Dask worker whose `metrics.json`, the
file that marks it finished, takes its name before the run's other files are in place. No kernel runs here."""
import ast
import errno
import importlib
import json
import os
from pathlib import Path

import pytest
import torch

import fashion_nb.batch as batch
from fashion_nb.batch import planned_runs
from fashion_nb.cli import main
from fashion_nb.cluster import receive_run
from fashion_nb.core import FashionNBError, project_root
from fashion_nb.data import FashionSplit
from fashion_nb.fast_network import FastNetwork
from fashion_nb.grid import params_key, parse_grid
from fashion_nb.resume import finished_metrics
from fashion_nb.training import seed_everything

END_TO_END = project_root()/'nbs'/'05_end_to_end.ipynb'

# 10 x 10 x 10 = 1,000 combinations; 5 drawn: two seeds draw the same five with a chance of 1 in C(1000, 5), about 1e-13
FINITE = [('lr', '0.001,0.002,0.003,0.004,0.005,0.006,0.007,0.008,0.009,0.01'),
          ('batch_size', '10,20,30,40,50,60,70,80,90,100'), ('seed', '0,1,2,3,4,5,6,7,8,9')]
# ranges: a rate of three digits over three decades, a batch size of 497 values and a seed of a million: a collision
# of five draws between two seeds is less likely still
RANGES = [('lr', 'log:1e-4:1e-1'), ('batch_size', 'int:16:512'), ('seed', 'int:0:1000000')]


def drawn(runs: list[dict]) -> set[str]:
    "The runs drawn, whatever order they run in: the batch shuffles the order with the seed too, which must not hide a draw that ignores it."
    return {params_key(r) for r in runs}


@pytest.mark.parametrize('pairs', [FINITE, RANGES], ids=['finite grid', 'ranges'])
def test_the_sample_seed_chooses_which_runs_are_drawn(pairs):
    grid = parse_grid(pairs)
    one, again, other = (planned_runs(grid, sample=5, sample_seed=s)[0] for s in (1, 1, 2))
    assert len(one) == 5 and one == again, f"seed 1 twice drew {one} then {again}"
    assert drawn(one) != drawn(other), f"seeds 1 and 2 drew the same runs: {sorted(drawn(one))}"


class Planned(FashionNBError):
    "Raised once the batch has planned its runs, so that none starts."


def cli_draw(monkeypatch, tmp_path, seed: int | None) -> list[dict]:
    "The runs `fashion-nb batch --sample 5 [--sample-seed seed]` plans, stopped before any folder or kernel is made."
    planned = []
    def plan(*args, **kwargs):
        planned.append(planned_runs(*args, **kwargs)[0])  # the function as imported above, not an earlier call's wrapper
        raise Planned("planned")
    monkeypatch.setattr(batch, 'planned_runs', plan)
    argv = ['batch', *(a for name, values in FINITE for a in ('-p', name, values)), '--sample', '5',
            *(('--sample-seed', str(seed)) if seed is not None else ()), '--no-progress', '--out', str(tmp_path/'out')]
    assert main(argv) == 1 and len(planned) == 1, f"the batch did not stop once planned: {planned}"
    assert not (tmp_path/'out').exists()
    return planned[0]


def test_fashion_nb_batch_passes_sample_seed_to_the_draw(monkeypatch, tmp_path):
    "From the command line: --sample-seed reaches the draw, and leaving it out is seed 0."
    one, again, other, default, zero = (cli_draw(monkeypatch, tmp_path, s) for s in (1, 1, 2, None, 0))
    assert one == again, f"--sample-seed 1 twice drew {one} then {again}"
    assert drawn(one) != drawn(other), f"--sample-seed 1 and 2 drew the same runs: {sorted(drawn(one))}"
    assert default == zero, f"without --sample-seed: {default}; with --sample-seed 0: {zero}"


def notebook_code(path: Path) -> ast.Module:
    "The code cells of a notebook as one module (lines of IPython magic left out)."
    cells = [c['source'] if isinstance(c['source'], str) else ''.join(c['source'])
             for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code']
    return ast.parse('\n'.join('\n'.join(line for line in cell.splitlines() if not line.lstrip().startswith(('%', '!')))
                               for cell in cells))


def end_to_end_fit():
    "The `fit` call of the end-to-end notebook, and the function it calls, from the module it imports it from."
    tree = notebook_code(END_TO_END)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == 'fit']
    sources = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and any(a.name == 'fit' for a in n.names)]
    assert len(calls) == 1 and len(sources) == 1, f"expected one fit call and one import of fit: {len(calls)} calls, from {sources}"
    return calls[0], importlib.import_module(sources[0]).fit


def test_the_end_to_end_notebook_gives_fit_its_seed():
    "05 hands the run's `seed` to the `fit` that shuffles, not only to `seed_everything` before the weights are made."
    call, _ = end_to_end_fit()
    given = {k.arg: ast.unparse(k.value) for k in call.keywords}
    assert given.get('seed') in ("params['seed']", 'seed'), f"05 calls {ast.unparse(call)}"
    # the other random draws of training (augment's shifts and mirrors) are seeded with it too
    seeded = [ast.unparse(n) for n in ast.walk(notebook_code(END_TO_END))
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == 'manual_seed']
    assert seeded and all(s.endswith(".manual_seed(params['seed'])") for s in seeded), f"05 seeds its generators so: {seeded}"


IMAGES = 300  # a pixel of each says which image it is: the order is read off the batches


@pytest.fixture(scope='module')
def numbered_split():
    images = torch.randint(0, 256, (IMAGES, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images[:, 0, 0] = torch.arange(IMAGES) % 256
    images[:, 0, 1] = torch.arange(IMAGES) // 256
    return FashionSplit(images, torch.randint(0, 10, (IMAGES,), generator=torch.Generator().manual_seed(1)))


def first_batch_and_weights(split, monkeypatch, weights_seed: int, shuffle_seed: int):
    "The images of the first batch `fit` trains on (by number), and the weights after one epoch from the same start."
    _, fit = end_to_end_fit()  # the notebook's fit, so that the test follows it if it changes module
    served, real = [], FashionSplit.batches
    def batches(self, *args, **kwargs):
        for images, labels in real(self, *args, **kwargs):
            if len(served) == 0:
                pixels = (images[:, 0, 0, :2] * 255).round().long()
                served.append((pixels[:, 0] + 256 * pixels[:, 1]).tolist())
            yield images, labels
    monkeypatch.setattr(FashionSplit, 'batches', batches)
    seed_everything(weights_seed)
    model = FastNetwork()
    fit(model, split, epochs=1, batch_size=50, lr=0.01, seed=shuffle_seed, device='cpu', quiet=True)
    monkeypatch.undo()
    assert served, "fit served no batch through FashionSplit.batches: this test no longer sees the order"
    return served[0], [t.detach().clone() for t in model.state_dict().values()]


def test_the_training_order_follows_the_seed_given_to_fit_and_nothing_else(numbered_split, monkeypatch):
    "The initial weights made with one seed: the same shuffle seed serves the same first batch, another seed another."
    one, _ = first_batch_and_weights(numbered_split, monkeypatch, 0, 1)
    again, _ = first_batch_and_weights(numbered_split, monkeypatch, 0, 1)
    other, _ = first_batch_and_weights(numbered_split, monkeypatch, 0, 2)
    assert one == again, f"shuffle seed 1 twice: first batch {one[:10]}... then {again[:10]}..."
    assert one != other, f"shuffle seeds 1 and 2 serve the same first batch {one[:10]}...: the order ignores the seed"
    assert sorted(one) != list(range(50)), "the first batch is the first 50 images in order: no shuffle"
    # nor does the order come from the generator the weights were drawn with
    other_weights, _ = first_batch_and_weights(numbered_split, monkeypatch, 5, 1)
    assert other_weights == one, f"weights seed 0 then 5, shuffle seed 1: {one[:10]}... then {other_weights[:10]}..."


def test_from_the_same_initial_weights_another_shuffle_seed_trains_other_weights(numbered_split, monkeypatch):
    "What a seed spread over runs measures: from one start, the order alone changes what is learned."
    _, one = first_batch_and_weights(numbered_split, monkeypatch, 0, 1)
    _, again = first_batch_and_weights(numbered_split, monkeypatch, 0, 1)
    _, other = first_batch_and_weights(numbered_split, monkeypatch, 0, 2)
    assert all(torch.equal(a, b) for a, b in zip(one, again)), "the same seeds twice trained different weights"
    assert not all(torch.equal(a, b) for a, b in zip(one, other)), "shuffle seeds 1 and 2 trained the same weights"


# what `run_on_worker` sends back, in its order (by name): metrics.json is not last
FILES = {'confusion_matrix.png': b'png', 'end_to_end.ipynb': b'{"cells": []}', 'kernel.log': b'log',
         'metrics.json': b'{"test_accuracy": 0.5}', 'model.pt': b'model'}
ROW = {'run': 'lr=0.1', 'lr': 0.1, 'status': 'done', 'notebook': '/on/the/worker/end_to_end.ipynb'}


def watch_names(monkeypatch, fail: str | None = None) -> list[tuple[str, list[str]]]:
    "Each file taking its name in the run's folder, with the files already there; taking the name `fail` raises a full disk's error."
    taken, real = [], os.replace
    def replace(src, dst, *args, **kwargs):
        dst = Path(dst)
        taken.append((dst.name, sorted(p.name for p in dst.parent.iterdir() if not p.name.startswith('.'))))
        if dst.name == fail: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, 'replace', replace)
    return taken


@pytest.mark.parametrize('files', [FILES, dict(sorted(FILES.items(), key=lambda f: f[0] != 'metrics.json'))],
                         ids=['as the worker sends them', 'metrics.json sent first'])
def test_a_received_run_gets_its_metrics_json_last(tmp_path, monkeypatch, files):
    taken = watch_names(monkeypatch)
    receive_run(ROW, files, tmp_path)
    metrics = [there for name, there in taken if name == 'metrics.json']
    assert len(metrics) == 1, f"metrics.json did not take its name in one step (os.replace): {taken}"
    others = sorted(n for n in files if n != 'metrics.json')
    assert metrics[0] == others, f"when metrics.json took its name, the folder held {metrics[0]}, not {others}"
    assert sorted(p.name for p in (tmp_path/ROW['run']).iterdir()) == sorted(files)


@pytest.mark.parametrize('earlier', [False, True], ids=['new folder', "over an earlier run's results"])
@pytest.mark.parametrize('failing', list(FILES))
def test_a_receive_that_fails_leaves_no_metrics_json(tmp_path, monkeypatch, failing, earlier):
    "A disk that fills while any one file is written: the run does not look finished, not even with an earlier run's metrics."
    run_dir = tmp_path/ROW['run']
    if earlier:
        run_dir.mkdir()
        for name in FILES: (run_dir/name).write_bytes(b'{"test_accuracy": 0.1}' if name == 'metrics.json' else b'old')
    watch_names(monkeypatch, fail=failing)
    with pytest.raises(OSError) as info:
        receive_run(ROW, FILES, tmp_path)
    assert info.value.errno == errno.ENOSPC, info.value
    monkeypatch.undo()
    left = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    assert 'metrics.json' not in left, f"writing {failing} failed, yet the folder holds {left}"
    assert finished_metrics(run_dir) is None
