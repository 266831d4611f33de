"""Benchmark: a grid of small runs, once with the papermill command run N at a time, once with `fashion-nb batch`.

    python bench/batch.py [--workers 2] [--out bench/results/batch.json]

Both sides run the same notebook with the same parameters and the same parallelism: each papermill command gets
`threads` as each batch run does, and `val_size 0` because the notebook's own default is 0. The claim is the ratio of
the two wall times, measured in one run on one machine. The per-run overhead is the wall time a run costs a worker
(wall time x workers / runs) less the training seconds the run recorded itself. Each batch run also records its worker's
kept kernel's peak resident memory (`kernel_peak_memory` in its metrics.json), which a batch sizes itself by.
"""
import argparse
import datetime
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fashion_nb.checkpoint import library_versions
from fashion_nb.core import project_root, write_json
from fashion_nb.params import END_TO_END
from fashion_nb.sizing import KEPT_KERNEL_MEMORY, threads_per_run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its neighbours, however it is started
from run import machine  # noqa: E402

GRID = {'lr': [0.001, 0.003, 0.01, 0.03], 'seed': [0, 1], 'limit': [1000], 'epochs': [1], 'val_size': [0]}
BIN = Path(sys.executable).parent


def succeeded(command: list, **kwargs) -> None:
    "Run `command` quietly; if it fails, stop with the end of what it printed."
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        said = '\n'.join((result.stdout + result.stderr).strip().splitlines()[-15:])
        sys.exit(f"bench-batch: {Path(command[0]).name} {command[1]} failed (exit {result.returncode}):\n{said}")


def papermill_loop(runs: list[dict], out: Path, workers: int, threads: int) -> float:
    "The papermill command, `workers` at a time (as `xargs -P`), one output folder a run; returns the wall seconds."
    def one(i_params):
        i, params = i_params
        folder = out/f'run{i}'
        folder.mkdir(parents=True)
        arguments = [a for name, value in {**params, 'threads': threads, 'quiet': True, 'out_dir': str(folder)}.items()
                     for a in ('-p', name, str(value))]
        succeeded([BIN/'papermill', project_root()/END_TO_END, folder/'end_to_end.ipynb', '-k', 'python3',
                   '--no-progress-bar', *arguments], cwd=project_root())
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool: list(pool.map(one, enumerate(runs)))
    return time.perf_counter() - start


def fashion_nb_batch(out: Path, workers: int) -> tuple[float, float]:
    "`fashion-nb batch` over the same grid; returns the wall seconds and the clock time it started at."
    arguments = [a for name, values in GRID.items() for a in ('-p', name, ','.join(map(str, values)))]
    started_at, start = time.time(), time.perf_counter()
    succeeded([BIN/'fashion-nb', 'batch', *arguments, '--workers', str(workers), '--no-progress', '--out', out])
    return time.perf_counter() - start, started_at


def executed_notebooks(folder: Path) -> list[dict]:
    "The executed notebook of every run in a batch folder, read once for both analyses below."
    return [json.loads(path.read_text()) for path in sorted(folder.glob('*/end_to_end.ipynb'))]


def where_the_batch_goes(notebooks: list[dict], started_at: float, seconds: float, workers: int) -> dict:
    "The batch's wall seconds in four parts: until its first run starts, running notebooks, between runs, after the last."
    spans = []
    for nb in notebooks:
        meta = nb['metadata']['papermill']
        spans.append((datetime.datetime.fromisoformat(meta['start_time']).timestamp(),
                      datetime.datetime.fromisoformat(meta['end_time']).timestamp()))
    before = min(start for start, _ in spans) - started_at
    after = started_at + seconds - max(end for _, end in spans)
    running = sum(end - start for start, end in spans) / workers  # a worker's share: the workers run side by side
    return {'starting: the command, its workers and their kernels': before, 'running notebooks': running,
            'between runs: reset, bookkeeping, idle workers': seconds - before - after - running,
            'finishing: tables, figures, shutting down': after}


def run_metrics(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob('*/metrics.json'))]


STAGES = {'import': 'imports', 'params = check_params': 'checking the parameters', 'train_all = load_split': 'data',
          'seed_everything': 'training', 'if len(history)': 'learning curve', 'image, label': 'one image',
          'predict_started': 'predicting both splits', 'test_preds': 'confusion matrix and its figure',
          'metrics = {': 'writing metrics.json and model.pt'}


def where_the_seconds_go(notebooks: list[dict]) -> dict:
    "Mean seconds of each stage of the batch's runs, from papermill's timing of every cell; the rest is kernel and papermill."
    stages = {}
    for nb in notebooks:
        cells = 0.0
        for cell in nb['cells']:
            seconds = cell.get('metadata', {}).get('papermill', {}).get('duration') or 0.0
            stage = next((name for start, name in STAGES.items() if ''.join(cell['source']).startswith(start)), 'other cells')
            stages.setdefault(stage, []).append(seconds)
            cells += seconds
        stages.setdefault('kernel start and papermill, outside the cells', []).append(nb['metadata']['papermill']['duration'] - cells)
    return {stage: sum(values) / len(notebooks) for stage, values in stages.items()}


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--out', default=str(Path(__file__).resolve().parent/'results'/'batch.json'))
    args = parser.parse_args()
    runs = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    threads = threads_per_run(args.workers)  # as each batch run gets
    scratch = Path(tempfile.mkdtemp(prefix='fashion_nb-bench-'))
    try:
        print(f"bench-batch: {len(runs)} runs with the papermill command, {args.workers} at a time ...", file=sys.stderr, flush=True)
        papermill_seconds = papermill_loop(runs, scratch/'papermill', args.workers, threads)
        print(f"bench-batch: the same {len(runs)} runs with fashion-nb batch ...", file=sys.stderr, flush=True)
        batch_seconds, batch_started_at = fashion_nb_batch(scratch/'batch', args.workers)
        metrics = {side: run_metrics(scratch/side) for side in ('papermill', 'batch')}
        trained = {side: [m['seconds']['train'] for m in ms] for side, ms in metrics.items()}
        devices = sorted({m['device'] for ms in metrics.values() for m in ms})  # 'auto' resolves to a GPU where there is one
        peaks = [m.get('kernel_peak_memory') for m in metrics['batch']]  # each run's worker's kept kernel, at the run's end
        notebooks = executed_notebooks(scratch/'batch')
        stages = where_the_seconds_go(notebooks)
        phases = where_the_batch_goes(notebooks, batch_started_at, batch_seconds, args.workers)
        complete = all(sorted(p.name for p in run.iterdir() if not p.name.startswith('.')) ==
                       ['confusion_matrix.png', 'end_to_end.ipynb', 'kernel.log', 'metrics.json', 'model.pt']
                       for run in (scratch/'batch').iterdir() if run.is_dir())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert len(trained['batch']) == len(trained['papermill']) == len(runs), trained
    overhead = {side: seconds * args.workers / len(runs) - statistics.mean(trained[side])
                for side, seconds in (('papermill', papermill_seconds), ('batch', batch_seconds))}
    ratios = {'batch_speedup_vs_papermill': papermill_seconds / batch_seconds}
    print(f"papermill command, {args.workers} at a time: {papermill_seconds:.1f} s ({overhead['papermill']:.1f} s of overhead a run)")
    print(f"fashion-nb batch, {args.workers} workers:      {batch_seconds:.1f} s ({overhead['batch']:.1f} s of overhead a run)")
    print(f"batch {ratios['batch_speedup_vs_papermill']:.2f}x faster; every batch run's files complete: {complete}")
    for phase, seconds in phases.items(): print(f"  {phase:<55} {seconds:5.1f} s")
    gib = [p / 2**30 for p in peaks if p]
    peak_memory = {'per_run': [round(p, 3) for p in gib], 'max': round(max(gib), 3) if gib else None,
                   'sizing_assumes': round(KEPT_KERNEL_MEMORY / 2**30, 3)}
    if gib: print(f"a worker's kept kernel at its peak: {peak_memory['max']:.2f} GiB (sizing assumes {peak_memory['sizing_assumes']:.2f} GiB)")
    write_json(args.out, {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'settings': {'grid': GRID, 'runs': len(runs), 'workers': args.workers, 'threads_per_run': threads},
        'machine': {**machine('cuda' if any(d.startswith('cuda') for d in devices) else 'cpu'), 'run_devices': devices},
        'versions': library_versions(),
        'seconds': {'papermill': papermill_seconds, 'batch': batch_seconds},
        'training_seconds_mean': {side: statistics.mean(v) for side, v in trained.items()},
        'per_run_overhead_seconds': overhead['batch'], 'papermill_per_run_overhead_seconds': overhead['papermill'],
        'seconds_per_run_by_stage': stages, 'batch_seconds_by_phase': phases, 'runs_complete': complete, 'ratios': ratios,
        'kernel_peak_memory_gib': peak_memory})
    print(f"bench-batch: results in {args.out}", file=sys.stderr)
