"""Time to accuracy, measured in one run on one machine (`make bench-accuracy`).

1. The seed loop: the tutorial's own loop at its settings (5 epochs), in a process of its own, as `make bench` times it.
2. 06's recipe once (seed 0), then the faster lesson's (`RECIPE` in `fashion_nb.faster`) once for each seed, each run
   by the command the README gives; each run's test accuracy and training seconds come from the `metrics.json` it writes.
3. The plain loop: the recipe's network, settings and seed 0 trained by the lesson's own `fit` (02_training: a
   `DataLoader`, float32, `.item()` every batch, PyTorch's AdamW), as a learner would write it, against the engine's
   training of the same seed in step 2.

    .venv/bin/python bench/time_to_accuracy.py [--seeds 0 1 2] [--out bench/results/time_to_accuracy.json]
"""
import argparse
import datetime
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import optim
from torch.utils.data import DataLoader, TensorDataset

from fashion_nb.beyond import one_cycle, shift_and_flip, split_scores
from fashion_nb.checkpoint import network_of
from fashion_nb.core import write_json
from fashion_nb.data import holdout, load_split, to_float
from fashion_nb.faster import RECIPE, recipe_command
from fashion_nb.inference import accuracy
from fashion_nb.training import fit as lesson_fit, seed_everything

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(HERE))
from run import machine  # noqa: E402


def seed_loop(seed: int = 0) -> dict:
    "The tutorial's loop at its settings, in a fresh process, as `make bench` runs it."
    out = subprocess.run([sys.executable, str(HERE/'train_predict.py'), '--path', 'tutorial', '--seed', str(seed)],
                         capture_output=True, text=True)
    if out.returncode != 0: sys.exit(f"bench-accuracy: the tutorial's loop failed: {out.stderr.strip()[-300:]}")
    run = json.loads(out.stdout.strip().splitlines()[-1])
    return {'seed': seed, 'epochs': len(run['epoch_seconds']), 'train_seconds': sum(run['epoch_seconds']),
            'test_accuracy': run['test_accuracy']}


BEYOND = HERE.parent/'nbs'/'results'/'beyond'/'runs.json'  # 06's chosen setting, as its sweep recorded it


def beyond_command(seed: int, out: str) -> list[str]:
    "The `fashion-nb run` command of 06's recipe, as the README gives it."
    return recipe_command(seed, out, json.loads(BEYOND.read_text())['command_params'])


def recipe_run(seed: int, threads: int, command_of=recipe_command) -> dict:
    "One run of a recipe's command, with `seed`: its test accuracy and training seconds from its metrics.json."
    with tempfile.TemporaryDirectory(prefix='fashion_nb-accuracy-') as out:
        command = command_of(seed, out) + ['-p', 'threads', str(threads), '-p', 'quiet', 'True']
        done = subprocess.run([str(BIN/command[0]), *command[1:]], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"bench-accuracy: the recipe's run with seed {seed} failed: {done.stderr.strip()[-300:]}")
        metrics = json.loads((Path(out)/'metrics.json').read_text())
    return {'seed': seed, 'test_accuracy': metrics['test_accuracy'], 'train_seconds': metrics['seconds']['train'],
            'val_accuracy': metrics['val_accuracy'], 'epoch_seconds': [h['seconds'] for h in metrics['history']]}


class Augmented:
    "A loader whose picture batches go through `augment` each time they are drawn (as 06_beyond writes it)."
    def __init__(self, loader, augment): self.loader, self.augment = loader, augment
    def __iter__(self): return ((self.augment(x), y) for x, y in self.loader)
    def __len__(self): return len(self.loader)


def plain_loop(seed: int = 0) -> dict:
    "The recipe trained by the lesson's `fit`, in float32, with a DataLoader, as a learner writes it."
    r = RECIPE
    train_all, test = load_split('train', download=False), load_split('test', download=False)
    train, valid = holdout(train_all, r['val_size']) if r['val_size'] else (train_all, None)
    train = train.head(r['limit'])
    seed_everything(seed)
    model = network_of(r)()  # the network the recipe's run builds, from its settings
    loader = DataLoader(TensorDataset(to_float(train.images), train.labels), batch_size=r['batch_size'], shuffle=True)
    held_out = DataLoader(TensorDataset(to_float(valid.images), valid.labels), batch_size=1000) if valid else None
    optimizer = optim.AdamW(model.parameters(), lr=r['lr'], weight_decay=r['weight_decay'])
    scheduler = one_cycle(optimizer, total_steps=r['epochs'] * len(loader))
    moves = torch.Generator().manual_seed(seed)
    batches = Augmented(loader, partial(shift_and_flip, max_shift=r['max_shift'], generator=moves))
    start = time.perf_counter()
    lesson_fit(r['epochs'], model, partial(F.cross_entropy, label_smoothing=r['label_smoothing']), optimizer,
               batches, held_out, scheduler=scheduler)
    seconds = time.perf_counter() - start
    scores = split_scores(model, test, r['flip_scores'], r['shift_scores'])
    return {'seed': seed, 'train_seconds': seconds, 'test_accuracy': accuracy(scores, test.labels)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--out', default=str(HERE/'results'/'time_to_accuracy.json'))
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    print(f"bench-accuracy: {threads} threads; the tutorial's loop (5 epochs) ...", flush=True)
    tutorial = seed_loop()
    print(f"  {tutorial['train_seconds']:.1f} s, test accuracy {tutorial['test_accuracy']:.4f}", flush=True)
    print("06's recipe, seed 0 ...", flush=True)
    beyond = recipe_run(0, threads, beyond_command)
    print(f"  {beyond['train_seconds']:.1f} s, test accuracy {beyond['test_accuracy']:.4f}", flush=True)
    runs = []
    for seed in args.seeds:
        print(f"the recipe, seed {seed} ...", flush=True)
        runs.append(recipe_run(seed, threads))
        print(f"  {runs[-1]['train_seconds']:.1f} s, test accuracy {runs[-1]['test_accuracy']:.4f}", flush=True)
    print("the recipe by the lesson's plain loop, seed 0, float32 ...", flush=True)
    plain = plain_loop(args.seeds[0])
    print(f"  {plain['train_seconds']:.1f} s, test accuracy {plain['test_accuracy']:.4f}", flush=True)
    tests = [r['test_accuracy'] for r in runs]
    seconds = [r['train_seconds'] for r in runs]
    result = {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'machine': {**machine(), 'threads': threads, 'torch': torch.__version__},
        'seed_loop': tutorial,
        'beyond': beyond,
        'recipe': {'command': shlex.join(recipe_command(args.seeds[0])), 'params': RECIPE, 'runs': runs,
                   'test_accuracy_mean': statistics.mean(tests),
                   'test_accuracy_std': statistics.stdev(tests) if len(tests) > 1 else 0.0,
                   'train_seconds_mean': statistics.mean(seconds)},
        'plain_loop': {'seed': plain['seed'], 'train_seconds': plain['train_seconds'],
                       'engine_train_seconds': runs[0]['train_seconds'], 'test_accuracy': plain['test_accuracy'],
                       'engine_test_accuracy': runs[0]['test_accuracy']},
    }
    result['ratios'] = {'recipe_over_seed_loop': result['recipe']['train_seconds_mean'] / tutorial['train_seconds'],
                        'plain_over_engine': plain['train_seconds'] / runs[0]['train_seconds']}
    write_json(args.out, result)
    print(f"recipe: test accuracy {result['recipe']['test_accuracy_mean']:.4f} ± {result['recipe']['test_accuracy_std']:.4f} "
          f"over seeds {args.seeds}, {result['recipe']['train_seconds_mean']:.0f} s "
          f"({result['ratios']['recipe_over_seed_loop']:.1f}× the tutorial's 5 epochs); "
          f"the engine {result['ratios']['plain_over_engine']:.2f}× the plain loop; written to {args.out}")


if __name__ == '__main__':
    main()
