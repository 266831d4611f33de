"""The results the "Faster to 0.94" page reads, from the batch `make faster` ran (runs/faster/).

Writes nbs/results/faster/runs.json: the sweep's settings in the order of sweeps/faster.yaml, and a row a run (its
setting's number, parameters, seed, validation accuracy, training seconds from its metrics.json) with the test accuracy
only for the runs of the setting the batch chose on validation, as the batch's own summary keeps it.

    .venv/bin/python scripts/faster_results.py [BATCH_FOLDER]
"""
import json
import sys
from pathlib import Path

import yaml

from fashion_nb.core import write_json
from fashion_nb.params import PARAMETERS
from fashion_nb.report import choose, compare_settings, read_summary, runs_of

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT/'sweeps'/'faster.yaml'
RESULTS = ROOT/'nbs'/'results'/'faster'/'runs.json'
NOT_SETTING = {'seed', 'threads', 'quiet'}  # how a run ran, not what it trained


def main(batch: Path = ROOT/'runs'/'faster', results: Path = RESULTS) -> Path:
    settings = [{k: v for k, v in s.items() if k not in NOT_SETTING} for s in yaml.safe_load(SWEEP.read_text())]
    # a setting that does not name a parameter runs it at the notebook's default: a run of a later setting,
    # which names more, must not also read as a run of an earlier one
    named = {k for s in settings for k in s}
    in_full = [{k: s.get(k, PARAMETERS[k].default) for k in named} for s in settings]
    rows = read_summary(batch/'summary.csv')
    chosen = choose(compare_settings(rows), rows)
    if chosen is None: sys.exit(f"faster_results: no setting chosen in {batch}; run make faster first")
    chosen_runs = {r['run'] for r in runs_of(chosen, rows)}
    runs = []
    for row in rows:
        if row['status'] not in ('done', 'skipped'):
            sys.exit(f"faster_results: run {row['run']} did not finish ({row['reason']}); run make faster again")
        metrics = json.loads((batch/row['run']/'metrics.json').read_text())
        params = metrics['params']
        number = next((i for i, s in enumerate(in_full) if all(params.get(k) == v for k, v in s.items())), None)
        if number is None: sys.exit(f"faster_results: run {row['run']} is no setting of {SWEEP.name}")
        runs.append({'setting': number, 'seed': params['seed'], 'val_accuracy': metrics['val_accuracy'],
                     'train_seconds': metrics['seconds']['train'],
                     'test_accuracy': metrics['test_accuracy'] if row['run'] in chosen_runs else None})
    chosen_number = next(r['setting'] for r in runs if r['test_accuracy'] is not None)
    runs.sort(key=lambda r: (r['setting'], r['seed']))
    write_json(results, {'sweep': SWEEP.name, 'settings': settings, 'chosen': chosen_number, 'runs': runs})
    return results


if __name__ == '__main__':
    print(main(*(Path(a) for a in sys.argv[1:2])))
