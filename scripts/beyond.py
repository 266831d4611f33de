"""The sweep of the "Beyond the tutorial" page, and the results the page reads (what `make beyond` runs).

1. `fashion-nb batch` runs the ablation of sweeps/beyond.yaml into runs/beyond/: each setting with three seeds,
   every run ranked on the same 10,000 held-out training images.
2. The batch's own `choose` picks the setting with the best mean validation accuracy.
3. The chosen setting runs once more, seed 0, with as many epochs as fit in ten minutes at the pace of its slowest
   epoch in the sweep, less 5 % (runs/beyond-long/).
4. nbs/results/beyond/ gets what the page shows: runs.json (a row a run: its setting, validation accuracy, training
   seconds and validation curve; the test accuracy only where the page reads it: the chosen setting, the long run
   and the tutorial's settings it is compared with) and the seed-0 models of the tutorial's setting and the chosen.

    .venv/bin/python scripts/beyond.py [--long-epochs N]
"""
import argparse
import json
import shutil
import signal
from pathlib import Path

from fashion_nb.batch import BatchInterrupted, run_batch, with_defaults
from fashion_nb.cli import _stop_as_ctrl_c
from fashion_nb.core import atomic_path
from fashion_nb.grid import parse_grid
from fashion_nb.report import choose, compare_settings, report, runs_of
from fashion_nb.resume import finished_metrics, run_folder
from fashion_nb.run import _declared_defaults

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT/'sweeps'/'beyond.yaml'
RESULTS = ROOT/'nbs'/'results'/'beyond'
PARAMS = ('model', 'epochs', 'batch_size', 'lr', 'schedule', 'weight_decay', 'precision', 'augment', 'max_shift',
          'label_smoothing', 'flip_scores')  # what a setting of the sweep is made of; the rest (seed, data, threads) is the same for all
LONG_SECONDS = 600  # the training budget of the long run


def changes(full: list[dict]) -> list[str]:
    "What each setting of the ablation changes from the one before it, as `name=value` text."
    return ["the tutorial's settings" if i == 0 else
            ', '.join(f"{k}={v}" for k, v in now.items() if full[i - 1][k] != v) for i, now in enumerate(full)]


def command_params(row: dict) -> dict:
    "The parameters `fashion-nb run` needs to repeat a run of the sweep: those that differ from the notebook's defaults."
    defaults = _declared_defaults(None)
    names = (*PARAMS, 'seed', 'limit', 'val_size')  # threads and quiet change how it runs, not what it computes
    return {k: row[k] for k in names if row[k] != defaults[k]}


def page_row(row: dict, step: int, change: str, with_test: bool) -> dict:
    "A run's row for the page: its setting, seed and measurements, with its test accuracy only when the page reads it."
    metrics = finished_metrics(run_folder(row))
    return {'step': step, 'change': change, **{k: row[k] for k in PARAMS}, 'seed': row['seed'],
            'val_accuracy': metrics['val_accuracy'], 'train_seconds': metrics['seconds']['train'], 'threads': metrics['threads'],
            'valid_curve': [h['valid_accuracy'] for h in metrics['history']],
            **({'test_accuracy': metrics['test_accuracy'], 'confusion_matrix': metrics['confusion_matrix']}
               if with_test else {})}


def main(long_epochs: int | None = None, pairs=(), out: Path = ROOT/'runs', results_dir: Path = RESULTS):
    settings = parse_grid(pairs, yaml_file=SWEEP)
    rows = run_batch(settings, out/'beyond', workers=1)
    table = compare_settings(rows)
    print('\n'.join(report(table, rows)))
    chosen = choose(table, rows)
    if chosen is None or any(r['status'] != 'done' and r['status'] != 'skipped' for r in rows):
        raise SystemExit("beyond: not every run of the sweep finished; run `make beyond` again to finish the rest")
    chosen_runs = {r['run'] for r in runs_of(chosen, rows)}
    seed0 = next(r for r in runs_of(chosen, rows) if r['seed'] == 0)
    long_params = {k: [seed0[k]] for k in (*PARAMS, 'seed', 'limit', 'val_size', 'threads', 'quiet')}
    if long_epochs is None:  # as many as fit in ten minutes at the slowest epoch the chosen setting's runs took, less 5 %
        slowest = max(h['seconds'] for r in runs_of(chosen, rows) for h in finished_metrics(run_folder(r))['history'])
        long_epochs = int(LONG_SECONDS * 0.95 // slowest)
    long_rows = run_batch({**long_params, 'epochs': [long_epochs]}, out/'beyond-long', workers=1)
    if long_rows[0]['status'] not in ('done', 'skipped'): raise SystemExit(f"beyond: the long run failed: {long_rows[0]['reason']}")

    full = [{k: setting[k][0] for k in PARAMS} for setting in with_defaults(settings)]  # as the runs had them
    labels = changes(full)
    def step(row): return next(i for i, f in enumerate(full) if all(row[k] == f[k] for k in PARAMS))
    runs = []
    for r in sorted(rows, key=lambda r: (step(r), r['seed'])):
        i = step(r)
        runs.append(page_row(r, i, labels[i], with_test=r['run'] in chosen_runs or r['model'] == 'tutorial'))
    long_run = page_row(long_rows[0], len(settings), f"the chosen setting, epochs={long_epochs}", with_test=True)

    results_dir.mkdir(parents=True, exist_ok=True)
    results = {'sweep': SWEEP.relative_to(ROOT).as_posix(), 'chosen_step': step(seed0), 'runs': runs, 'long_run': long_run,
               'command_params': command_params(seed0)}
    text = json.dumps(results, indent=1)
    for run in (*runs, long_run):  # a line a run: a diff then shows which runs changed
        text = text.replace(json.dumps(run, indent=1).replace('\n', '\n  '), json.dumps(run), 1)
    with atomic_path(results_dir/'runs.json') as tmp: tmp.write_text(text + '\n')
    tutorial0 = next(r for r in rows if r['model'] == 'tutorial' and r['seed'] == 0)
    for name, row in (('tutorial.pt', tutorial0), ('better.pt', seed0)):
        with atomic_path(results_dir/name) as tmp: shutil.copyfile(run_folder(row)/'model.pt', tmp)
    print(f"beyond: {len(runs)} runs and the long run in {results_dir}/runs.json; "
          f"models of seed 0: tutorial.pt, better.pt")


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, _stop_as_ctrl_c)  # as `fashion-nb batch` does: kill PID stops the workers too
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--long-epochs', type=int, default=None,
                        help='epochs of the long run of the chosen setting (default: as many as fit in ten minutes)')
    parser.add_argument('-p', nargs=2, action='append', default=[], metavar=('NAME', 'VALUES'),
                        help='a value for every setting, as fashion-nb batch -p takes it (a quick trial: -p limit 300)')
    parser.add_argument('--out', type=Path, default=ROOT/'runs', help='where the batch folders go')
    parser.add_argument('--results', type=Path, default=RESULTS, help="where the page's results go")
    args = parser.parse_args()
    try: main(args.long_epochs, [tuple(p) for p in args.p], args.out.resolve(), args.results)
    except BatchInterrupted as e: raise SystemExit(f"beyond: {e}") from None
