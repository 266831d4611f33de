"""`make bench-gpu`'s measurement: the engine's training on a CUDA GPU, each step replayed as a CUDA graph, against the
same training launched eagerly (`cuda_graphs=False`), in one process on one GPU.

    python bench/gpu.py [--seeds 0 1 2] [--out bench/results/gpu.json]

1. The tutorial's settings (`FastNetwork`, 5 epochs, batch 100, Adam at 0.01, all 60,000 training images), each seed
   graphed and eager in turn: seconds per epoch and test accuracy.
2. The recipe `06_beyond` chose (its settings read from nbs/results/beyond/runs.json: `BetterNetwork`, 10 epochs, one-cycle
   AdamW, bfloat16, mirrored pictures, ...), built as the end-to-end notebook builds it, seed 0, graphed and eager:
   training seconds (the validation scoring after each epoch included, as the notebook counts them) and test accuracy.

Before anything is timed, one short fit of each kind sets up CUDA and its libraries, whose first use would otherwise
fall on whichever run came first. Every timing waits for the GPU before the clock is read (`fit` reads its sums at the
end of each epoch).
"""
import argparse
import datetime
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from fashion_nb.beyond import BetterNetwork, one_cycle, shift_and_flip, split_scores
from fashion_nb.checkpoint import library_versions
from fashion_nb.core import DeviceError, write_json
from fashion_nb.data import holdout, load_split
from fashion_nb.engine import adam, fit, pick_device
from fashion_nb.fast_network import FastNetwork
from fashion_nb.inference import accuracy
from fashion_nb.training import seed_everything

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TUTORIAL = {'epochs': 5, 'batch_size': 100, 'lr': 0.01}
MODES = {'graphed': True, 'eager': False}


def tutorial_run(train, test, seed: int, graphs: bool) -> dict:
    "The tutorial's settings on all 60,000 images through the engine's `fit`: seconds per epoch and test accuracy."
    seed_everything(seed)
    model = FastNetwork()
    history = fit(model, train, **TUTORIAL, seed=seed, device='cuda', quiet=True, cuda_graphs=graphs)
    return {'seed': seed, 'epoch_seconds': [h['seconds'] for h in history],
            'test_accuracy': accuracy(split_scores(model, test), test.labels)}


def recipe_fit_kwargs(params: dict, seed: int) -> dict:
    "`fit`'s arguments for a setting of the end-to-end notebook's parameters, as its training cell builds them."
    kwargs = {'loss_func': partial(F.cross_entropy, label_smoothing=params.get('label_smoothing', 0.0)),
              'precision': params.get('precision', 'float32')}
    if params.get('weight_decay'): kwargs['opt_func'] = partial(adam, weight_decay=params['weight_decay'])
    if params.get('schedule') == 'one-cycle': kwargs['schedule'] = one_cycle
    if params.get('augment'):
        moves = torch.Generator().manual_seed(seed)
        kwargs['augment'] = partial(shift_and_flip, max_shift=params.get('max_shift', 2), generator=moves)
    return kwargs


def recipe_run(train_all, test, params: dict, seed: int, graphs: bool) -> dict:
    "The chosen recipe of 06_beyond, once: training seconds and test accuracy, scored as the notebook scores them."
    train, valid = holdout(train_all, params['val_size'])
    seed_everything(seed)
    model = BetterNetwork()
    history = fit(model, train, epochs=params['epochs'], batch_size=params['batch_size'], lr=params['lr'], seed=seed,
                  device='cuda', quiet=True, valid=valid, cuda_graphs=graphs, **recipe_fit_kwargs(params, seed))
    scores = split_scores(model, test, params.get('flip_scores', False))
    return {'seed': seed, 'train_seconds': sum(h['seconds'] for h in history),
            'epoch_seconds': [h['seconds'] for h in history], 'val_accuracy': history[-1]['valid_accuracy'],
            'test_accuracy': accuracy(scores, test.labels)}


def warm_up(train) -> None:
    "Set up CUDA, cuDNN and cuBLAS (and the bfloat16 paths) before any timed run, for both modes."
    for graphs in MODES.values():
        seed_everything(0)
        fit(FastNetwork(), train.head(2000), epochs=1, device='cuda', quiet=True, cuda_graphs=graphs)
        fit(BetterNetwork(), train.head(2000), epochs=1, batch_size=128, lr=0.005, device='cuda', quiet=True,
            cuda_graphs=graphs, precision='bfloat16', schedule=one_cycle)


def summary(tutorial_runs: dict, recipe: dict) -> dict:
    "Medians over the seeds for the tutorial's settings, the recipe's run, for each mode, and the ratios eager / graphed."
    out = {'tutorial': {}, 'beyond': {}}
    for mode, runs in tutorial_runs.items():
        per_seed = [statistics.mean(r['epoch_seconds']) for r in runs]
        out['tutorial'][mode] = {'epoch_seconds': statistics.median(per_seed),
                                 'test_accuracy_median': statistics.median(r['test_accuracy'] for r in runs),
                                 'runs': runs}
    for mode, run in recipe.items(): out['beyond'][mode] = run
    # the headline figures are the graphed ones, which `fit` uses on a GPU by default
    out['tutorial'].update({k: out['tutorial']['graphed'][k] for k in ('epoch_seconds', 'test_accuracy_median')})
    out['beyond'].update({k: out['beyond']['graphed'][k] for k in ('train_seconds', 'test_accuracy')})
    out['speedup'] = {'tutorial_epoch': out['tutorial']['eager']['epoch_seconds'] / out['tutorial']['epoch_seconds'],
                      'beyond_training': out['beyond']['eager']['train_seconds'] / out['beyond']['train_seconds']}
    return out


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--out', default=str(HERE/'results'/'gpu.json'))
    args = parser.parse_args()
    try: device = pick_device('cuda')
    except DeviceError as e: sys.exit(f"bench-gpu: {e}")
    started = time.perf_counter()
    train, test = load_split('train', download=False), load_split('test', download=False)
    params = json.loads((ROOT/'nbs'/'results'/'beyond'/'runs.json').read_text())['command_params']
    warm_up(train)
    tutorial_runs = {mode: [] for mode in MODES}
    for i, seed in enumerate(args.seeds):
        for mode in (MODES if i % 2 == 0 else list(MODES)[::-1]):  # turns, so that a slow spell falls on both
            print(f"bench-gpu: tutorial's settings, seed {seed}, {mode} ...", file=sys.stderr, flush=True)
            tutorial_runs[mode].append(tutorial_run(train, test, seed, MODES[mode]))
    recipe = {}
    for mode, graphs in MODES.items():
        print(f"bench-gpu: 06_beyond's recipe, seed 0, {mode} ...", file=sys.stderr, flush=True)
        recipe[mode] = recipe_run(train, test, params, 0, graphs)
    result = summary(tutorial_runs, recipe)
    cpu = json.loads((HERE/'results'/'latest.json').read_text())['per_path']['fashion_nb']['test_accuracy']['median']
    t, b = result['tutorial'], result['beyond']
    print(f"tutorial's settings: {t['epoch_seconds']:.3f} s an epoch graphed, {t['eager']['epoch_seconds']:.3f} s eager "
          f"({result['speedup']['tutorial_epoch']:.1f}x); test accuracy median {t['test_accuracy_median']:.4f} "
          f"(the CPU benchmark's: {cpu:.4f})")
    print(f"06_beyond's recipe: {b['train_seconds']:.1f} s of training graphed, {b['eager']['train_seconds']:.1f} s eager "
          f"({result['speedup']['beyond_training']:.1f}x); test accuracy {b['test_accuracy']:.4f}")
    write_json(args.out, {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                          'device': torch.cuda.get_device_name(device), 'versions': library_versions(),
                          'settings': {'tutorial': {**TUTORIAL, 'train_images': len(train), 'seeds': args.seeds},
                                       'beyond': params},
                          'cpu_benchmark_test_accuracy_median': cpu, **result,
                          'wall_seconds': time.perf_counter() - started})
    print(f"bench-gpu: results in {args.out}", file=sys.stderr)
