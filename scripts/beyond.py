"""The sweep of the "Beyond the tutorial" page, and the results the page reads (what `make beyond` runs).

1. sweeps/beyond.yaml is checked first: each setting after the first copies an earlier one, its parent
   (`<<: *name`), and changes exactly one setting of it; otherwise nothing runs.
2. `fashion-nb batch` runs its ablation into runs/beyond/: each setting with three seeds, every run ranked on the
   same 10,000 held-out training images.
3. The batch's own `choose` picks the setting with the best mean validation accuracy.
4. The chosen setting runs once more, seed 0, with as many epochs as fit in ten minutes at the pace of its median
   epoch in the sweep, less 5 % (runs/beyond-long/).
5. nbs/results/beyond/ gets what the page shows: runs.json (a row a run: its setting, its parent step and what it
   changed from it, validation accuracy, training seconds and validation curve; the test accuracy only where the
   page reads it: the chosen setting, the long run and the tutorial's settings it is compared with) and the
   seed-0 models of the tutorial's setting and the chosen.

    .venv/bin/python scripts/beyond.py [--long-epochs N]
"""
import argparse
import json
import shutil
import signal
import statistics
from pathlib import Path

from fashion_nb.batch import BatchInterrupted, run_batch, with_defaults
from fashion_nb.beyond import RECIPE, ablation_problems, changed_settings
from fashion_nb.cli import stop_as_ctrl_c
from fashion_nb.core import atomic_path, shown_path
from fashion_nb.grid import parse_grid
from fashion_nb.params import declared_defaults
from fashion_nb.report import choose, compare_settings, report, runs_of
from fashion_nb.resume import finished_metrics, run_folder

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT/'sweeps'/'beyond.yaml'
RESULTS = ROOT/'nbs'/'results'/'beyond'
PARAMS = RECIPE  # what a setting of the sweep is made of; the rest (seed, data, threads) is the same for all
MERGE = 'tag:yaml.org,2002:merge'  # the tag of YAML's `<<` key
LONG_SECONDS = 600  # the training budget of the long run


def sweep_parents(yaml_file: Path = SWEEP) -> list[int | None]:
    "Each setting's parent: the index of the earlier setting it copies with `<<: *name`; None where it copies none."
    import yaml
    try: items = yaml.compose(Path(yaml_file).read_text(), Loader=yaml.SafeLoader).value
    except (OSError, yaml.YAMLError) as e: raise SystemExit(f"beyond: {yaml_file}: cannot be read ({type(e).__name__})") from None
    parents = []
    for i, item in enumerate(items):
        copied = [value for key, value in item.value if key.tag == MERGE]
        if len(copied) > 1 or any(not any(value is earlier for earlier in items[:i]) for value in copied):
            raise SystemExit(f"beyond: {yaml_file}: setting {i} must copy one earlier setting, by `<<: *name`")
        parents.append(next(j for j, earlier in enumerate(items[:i]) if earlier is copied[0]) if copied else None)
    return parents


def sweep_steps(yaml_file: Path = SWEEP, pairs=()) -> tuple[list[dict], list[dict]]:
    "The sweep's grids, as `run_batch` takes them, and its steps: each setting as the runs have it, and its parent."
    defaults, grids = declared_defaults(), parse_grid(pairs, yaml_file=yaml_file)
    if not isinstance(grids, list): raise SystemExit(f"beyond: {yaml_file}: an ablation is a list of settings")
    settings = [{**{k: [defaults[k]] for k in PARAMS if k not in g}, **g}  # every run's row then names them all
                for g in with_defaults(grids)]
    several = [f"setting {i}: {k}" for i, g in enumerate(settings) for k in PARAMS if len(g[k]) > 1]
    if several: raise SystemExit(f"beyond: a setting of the ablation takes one value of each name: {'; '.join(several)}")
    full = [{k: g[k][0] for k in PARAMS} for g in settings]
    steps = [{'step': i, 'setting': f, 'parent': p} for i, (f, p) in enumerate(zip(full, sweep_parents(yaml_file)))]
    return settings, steps


def changes(steps: list[dict]) -> list[str]:
    "What each step of the ablation changes from its parent, as `name=value` text."
    return ["the tutorial's settings" if s['parent'] is None else
            ', '.join(f"{k}={s['setting'][k]}" for k in changed_settings(s['setting'], steps[s['parent']]['setting']))
            for s in steps]


def command_params(row: dict) -> dict:
    "The parameters `fashion-nb run` needs to repeat a run of the sweep: those that differ from the notebook's defaults."
    defaults = declared_defaults()
    names = (*PARAMS, 'seed', 'limit', 'val_size')  # threads and quiet change how it runs, not what it computes
    return {k: row[k] for k in names if row[k] != defaults[k]}


def page_row(row: dict, step: int, parent: int | None, change: str, with_test: bool) -> dict:
    "A run's row for the page: its setting, its parent step, seed and measurements, with its test accuracy only when the page reads it."
    metrics = finished_metrics(run_folder(row))
    return {'step': step, 'parent': parent, 'change': change, **{k: row[k] for k in PARAMS}, 'seed': row['seed'],
            'val_accuracy': metrics['val_accuracy'], 'train_seconds': metrics['seconds']['train'], 'threads': metrics['threads'],
            'valid_curve': [h['valid_accuracy'] for h in metrics['history']],
            **({'test_accuracy': metrics['test_accuracy'], 'confusion_matrix': metrics['confusion_matrix']}
               if with_test else {})}


def main(long_epochs: int | None = None, pairs=(), out: Path = ROOT/'runs', results_dir: Path = RESULTS,
         sweep: Path = SWEEP):  # another sweep file, of the same form: tests run a small one
    settings, steps = sweep_steps(sweep, pairs)
    broken = ablation_problems(steps)
    if broken: raise SystemExit(f"beyond: {Path(sweep).name} is not an ablation of one change a step: " + '; '.join(broken))
    rows = run_batch(settings, out/'beyond', workers=1)
    table = compare_settings(rows)
    print('\n'.join(report(table, rows)))
    chosen = choose(table, rows)
    if chosen is None or any(r['status'] != 'done' and r['status'] != 'skipped' for r in rows):
        raise SystemExit("beyond: not every run of the sweep finished; run `make beyond` again to finish the rest")
    chosen_runs = {r['run'] for r in runs_of(chosen, rows)}
    seed0 = next(r for r in runs_of(chosen, rows) if r['seed'] == 0)
    long_params = {k: [seed0[k]] for k in (*PARAMS, 'seed', 'limit', 'val_size', 'threads', 'quiet')}
    if long_epochs is None:  # the median epoch, not the slowest: one epoch slowed by other work would shorten the run
        pace = statistics.median(h['seconds'] for r in runs_of(chosen, rows) for h in finished_metrics(run_folder(r))['history'])
        long_epochs = int(LONG_SECONDS * 0.95 // pace)
    long_rows = run_batch({**long_params, 'epochs': [long_epochs]}, out/'beyond-long', workers=1)
    if long_rows[0]['status'] not in ('done', 'skipped'): raise SystemExit(f"beyond: the long run failed: {long_rows[0]['reason']}")

    labels = changes(steps)
    def step(row): return next(s['step'] for s in steps if all(row[k] == s['setting'][k] for k in PARAMS))
    runs = []
    for r in sorted(rows, key=lambda r: (step(r), r['seed'])):
        i = step(r)
        runs.append(page_row(r, i, steps[i]['parent'], labels[i], with_test=r['run'] in chosen_runs or i == 0))
    long_run = page_row(long_rows[0], len(settings), step(seed0), f"the chosen setting, epochs={long_epochs}",
                        with_test=True)

    results_dir.mkdir(parents=True, exist_ok=True)
    results = {'sweep': shown_path(sweep), 'chosen_step': step(seed0), 'runs': runs, 'long_run': long_run,
               'command_params': command_params(seed0)}
    text = json.dumps(results, indent=1)
    for run, depth in (*((run, 2) for run in runs), (long_run, 1)):  # a line a run: a diff then shows which runs changed
        text = text.replace(json.dumps(run, indent=1).replace('\n', '\n' + ' ' * depth), json.dumps(run), 1)
    with atomic_path(results_dir/'runs.json') as tmp: tmp.write_text(text + '\n')
    tutorial0 = next(r for r in rows if step(r) == 0 and r['seed'] == 0)
    for name, row in (('tutorial.pt', tutorial0), ('better.pt', seed0)):
        with atomic_path(results_dir/name) as tmp: shutil.copyfile(run_folder(row)/'model.pt', tmp)
    print(f"beyond: {len(runs)} runs and the long run in {results_dir}/runs.json; "
          f"models of seed 0: tutorial.pt, better.pt")


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, stop_as_ctrl_c)  # as `fashion-nb batch` does: kill PID stops the workers too
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
