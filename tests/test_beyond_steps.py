"""The ablation of the "Beyond the tutorial" page changes one setting a step: sweeps/beyond.yaml, expanded as
scripts/beyond.py expands it, and the committed results in nbs/results/beyond/runs.json once they come from it."""
import importlib.util
import json

import pytest

from fashion_nb.beyond import ablation_problems, ablation_steps
from fashion_nb.core import project_root

ROOT = project_root()
RESULTS = ROOT/'nbs'/'results'/'beyond'/'runs.json'
spec = importlib.util.spec_from_file_location('beyond_script', ROOT/'scripts'/'beyond.py')
beyond = importlib.util.module_from_spec(spec)
spec.loader.exec_module(beyond)

# the file's first two settings before it named parents: step 1 changed the network and three of its training settings
OLD_START = """- &tutorial {model: tutorial, epochs: 5, batch_size: 100, lr: 0.01, limit: 0, val_size: 10000,
             threads: 2, quiet: true, seed: [0, 1, 2]}
- &bigger {<<: *tutorial, model: better, epochs: 7, batch_size: 128, lr: 0.001}
- &scheduled {<<: *bigger, schedule: one-cycle, lr: 0.005}
- {<<: *scheduled, weight_decay: 0.05}
"""


def test_every_step_of_the_sweep_changes_one_setting_of_its_parent():
    _, steps = beyond.sweep_steps()
    assert ablation_problems(steps) == []
    assert steps[0]['parent'] is None and all(s['parent'] < s['step'] for s in steps[1:])


def test_the_sweep_isolates_what_the_page_credits():
    "The steps the page needs: the network changed alone, rate and schedule apart, mirror averaging without mirror training."
    _, steps = beyond.sweep_steps()
    def changed(step): return beyond.changes(steps)[step['step']]
    network = next((s for s in steps if changed(s) == 'model=better'), None)
    assert network, "no step changes the network alone"
    assert steps[network['parent']]['setting']['model'] == 'tutorial'
    rates = [s for s in steps if s['setting']['model'] == 'better' and s['setting']['schedule'] == 'constant'
             and changed(s).startswith('lr=')]
    schedules = [s for s in steps if changed(s) == 'schedule=one-cycle']
    assert rates and schedules
    assert any(s['setting']['flip_scores'] and not s['setting']['augment'] and changed(s) == 'flip_scores=True'
               for s in steps)


def test_a_step_of_several_changes_or_none_is_refused(tmp_path):
    "The check can fail: the file's old start, a setting that copies nothing, and one that copies two."
    old = tmp_path/'old.yaml'
    old.write_text(OLD_START)
    _, steps = beyond.sweep_steps(old)
    assert ablation_problems(steps) == ['step 1 changes 4 settings from step 0: model, epochs, batch_size, lr',
                                        'step 2 changes 2 settings from step 1: lr, schedule']
    orphan = tmp_path/'orphan.yaml'
    orphan.write_text("- {model: tutorial, seed: 0}\n- {model: better, seed: 0}\n")
    _, steps = beyond.sweep_steps(orphan)
    assert ablation_problems(steps) == ["step 1: its parent None is not an earlier step"]
    two = tmp_path/'two.yaml'
    two.write_text("- &a {model: tutorial}\n- &b {epochs: 2}\n- {<<: [*a, *b], lr: 0.1}\n")
    with pytest.raises(SystemExit, match='setting 2 must copy one earlier setting'): beyond.sweep_parents(two)
    single = tmp_path/'single.yaml'
    single.write_text("{model: tutorial, seed: [0, 1]}\n")
    with pytest.raises(SystemExit, match='an ablation is a list of settings'): beyond.sweep_steps(single)


def runs_problems(runs: list[dict]) -> list[str]:
    "What is wrong with the page's rows: a step that does not change one setting of its parent, rows not from the sweep's file as it is, a step without three seeds."
    steps = ablation_steps(runs)
    found = ablation_problems(steps)
    _, planned = beyond.sweep_steps()
    if [(s['setting'], s['parent']) for s in steps] != [(s['setting'], s['parent']) for s in planned]:
        found.append("the runs come from another version of sweeps/beyond.yaml")
    labels = beyond.changes(planned)
    found += [f"step {r['step']} seed {r['seed']}: change {r['change']!r}" for r in runs
              if r['step'] < len(labels) and r['change'] != labels[r['step']]]
    return found + [f"step {s['step']}: {s['runs']} seeds" for s in steps if s['runs'] != 3]


def test_the_committed_runs_change_one_setting_a_step():
    runs = json.loads(RESULTS.read_text())['runs']
    assert all('parent' in r for r in runs), "runs.json has runs that record no parent step: rerun `make beyond`"
    assert runs_problems(runs) == []


def test_the_runs_check_can_fail():
    "Rows made from the sweep's file as scripts/beyond.py writes them pass; one seed missing, or one setting changed, do not."
    _, planned = beyond.sweep_steps()
    labels = beyond.changes(planned)
    runs = [{**s['setting'], 'step': s['step'], 'parent': s['parent'], 'change': labels[s['step']], 'seed': seed,
             'val_accuracy': 0.9 + seed / 1000, 'train_seconds': 1.0} for s in planned for seed in (0, 1, 2)]
    assert runs_problems(runs) == []
    assert runs_problems(runs[1:]) == ['step 0: 2 seeds']
    changed = [{**r, 'epochs': 99} if r['step'] == 2 else r for r in runs]  # step 2 changes batch_size from 1
    found = runs_problems(changed)
    assert 'step 2 changes 2 settings from step 1: epochs, batch_size' in found, found
    assert 'the runs come from another version of sweeps/beyond.yaml' in found, found


# three settings in the form of sweeps/beyond.yaml (anchors, `<<: *parent`), two seeds each; `-p` below shrinks the data.
# Step 2 copies step 0, not the step before it: a parent taken as "the previous step" shows. Step 0's rate, 1e-4, learns
# next to nothing in 15 batches of 20, 0.01 (step 1) much more, so step 1 is chosen: the chosen setting and step 0 differ.
TINY_SWEEP = """- &tutorial {model: tutorial, epochs: 1, batch_size: 20, lr: 0.0001, max_shift: 0, limit: 0,
             val_size: 10000, threads: 2, quiet: true, seed: [0, 1]}
- {<<: *tutorial, lr: 0.01}
- {<<: *tutorial, batch_size: 50}
"""
LONG_EPOCHS = 2  # not the sweep's 1: the long run's epochs can only come from long_epochs


def test_the_script_on_a_tiny_sweep_writes_what_the_page_reads(tmp_path, real_data_available, capsys):
    "scripts/beyond.py end to end, on 300 images an epoch: step labels, parents, test accuracy only where chosen, the long run, the models."
    sweep = tmp_path/'tiny.yaml'
    sweep.write_text(TINY_SWEEP)
    out, results_dir = tmp_path/'runs', tmp_path/'results'
    beyond.main(LONG_EPOCHS, [('limit', '300'), ('val_size', '200')], out, results_dir, sweep=sweep)
    assert 'beyond: 6 runs and the long run' in capsys.readouterr().out
    results = json.loads((results_dir/'runs.json').read_text())
    runs, long_run, chosen = results['runs'], results['long_run'], results['chosen_step']
    assert results['sweep'].endswith('tiny.yaml'), results['sweep']
    found = [(r['step'], r['seed'], r['parent'], r['change']) for r in runs]
    assert found == [(0, 0, None, "the tutorial's settings"), (0, 1, None, "the tutorial's settings"),
                     (1, 0, 0, 'lr=0.01'), (1, 1, 0, 'lr=0.01'),
                     (2, 0, 0, 'batch_size=50'), (2, 1, 0, 'batch_size=50')], f"(step, seed, parent, change): {found}"
    assert [(r['lr'], r['batch_size'], r['epochs']) for r in runs[::2]] == [(0.0001, 20, 1), (0.01, 20, 1), (0.0001, 50, 1)]
    means = {s: sum(r['val_accuracy'] for r in runs if r['step'] == s) / 2 for s in range(3)}
    assert means[chosen] == max(means.values()), f"chosen step {chosen}, mean validation accuracy by step {means}"
    assert chosen == 1, f"step 1's rate should win here (mean validation accuracy by step {means}): else step 0 and the chosen are one"
    # the test split is read for the chosen setting only, and for the tutorial's settings the page compares it with
    tested = {(r['step'], r['seed']) for r in runs if 'test_accuracy' in r}
    assert tested == {(s, seed) for s in {0, chosen} for seed in (0, 1)}, f"chosen step {chosen}; test accuracy on {sorted(tested)}"
    assert all(('confusion_matrix' in r) == ('test_accuracy' in r) for r in runs)
    assert all(len(r['valid_curve']) == 1 and 0 < r['val_accuracy'] < 1 for r in runs)
    # the long run: the chosen setting, seed 0, long_epochs epochs, after the sweep's steps
    chosen_row = next(r for r in runs if r['step'] == chosen and r['seed'] == 0)
    where = (long_run['step'], long_run['parent'], long_run['seed'])
    assert where == (3, chosen, 0), f"long run (step, parent, seed) {where}; chosen step {chosen}"
    assert long_run['change'] == f"the chosen setting, epochs={LONG_EPOCHS}", long_run['change']
    assert long_run['epochs'] == LONG_EPOCHS and len(long_run['valid_curve']) == LONG_EPOCHS, \
        f"long run: epochs {long_run['epochs']}, {len(long_run['valid_curve'])} validation points; long_epochs {LONG_EPOCHS}"
    assert {k: long_run[k] for k in beyond.PARAMS if k != 'epochs'} == {k: chosen_row[k] for k in beyond.PARAMS if k != 'epochs'}
    assert 'test_accuracy' in long_run and 'confusion_matrix' in long_run
    assert {'limit': 300, 'val_size': 200}.items() <= results['command_params'].items(), results['command_params']
    # the two models: seed 0 of the tutorial's settings and of the chosen setting, as those runs saved them
    models = {}
    for metrics in (out/'beyond').glob('*/metrics.json'):
        params = json.loads(metrics.read_text())['params']
        models[(params['lr'], params['batch_size'], params['seed'])] = (metrics.parent/'model.pt').read_bytes()
    assert len(models) == 6, sorted(models)
    assert (results_dir/'tutorial.pt').read_bytes() == models[(0.0001, 20, 0)], "tutorial.pt is not step 0's seed-0 model"
    assert (results_dir/'better.pt').read_bytes() == models[(chosen_row['lr'], chosen_row['batch_size'], 0)], \
        f"better.pt is not the seed-0 model of the chosen step {chosen}"
    [long_metrics] = (out/'beyond-long').glob('*/metrics.json')
    assert json.loads(long_metrics.read_text())['params']['epochs'] == LONG_EPOCHS
