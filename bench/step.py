"""Benchmark: what each change to the training step and to prediction buys, side by side in one process.

    python bench/step.py [--rounds 12] [--out bench/results/step.json]
    python bench/step.py --device cuda --no-compile     # on a GPU; writes bench/results/step_cuda.json

Every variant starts from the same weights and sees the same batches, already in memory, so only the step itself
is measured (the data path is `bench/run.py`'s). The variants take turns, 50 steps each, round after round, so a slow
spell of the machine falls on all of them; the medians over the rounds are compared. Each variant adds one change to
the one before it, from the tutorial's `Network` to fashion_nb's own code, a `FastNetwork` trained by the engine's
`train_epoch`. On the CPU, fashion_nb's step is then timed in new processes, taking turns, with malloc as it comes and
keeping freed memory (`keep_freed_memory`, which `fit` no longer sets): a process-wide setting, so each gets its own.
"""
import argparse
import copy
import datetime
import os
import itertools
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from fashion_nb.checkpoint import library_versions
from fashion_nb.core import DeviceError, keep_freed_memory, write_json
from fashion_nb.data import load_split
from fashion_nb.engine import adam, pick_device, train_epoch
from fashion_nb.fast_network import FastNetwork
from fashion_nb.inference import get_all_preds
from fashion_nb.model import Network  # the tutorial's network as it wrote it: ReLU, then pool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its neighbours, also when loaded by path from a page
from run import machine, spread  # noqa: E402
from train_predict import tutorial_epoch, wait_for  # noqa: E402

STEPS, BATCH_SIZE, LR = 50, 100, 0.01


class PoolThenRelu(Network):
    "Pool, then ReLU, with PyTorch's operations throughout: `FastNetwork`'s order without its kernels or its strided pool."
    def forward(self, t):
        t = F.relu(F.max_pool2d(self.conv1(t), kernel_size=2, stride=2))
        t = F.relu(F.max_pool2d(self.conv2(t), kernel_size=2, stride=2))
        return self.out(F.relu(self.fc2(F.relu(self.fc1(t.reshape(-1, 192))))))


DEVICE = torch.device('cpu')  # where every variant runs; `--device` changes it


def from_weights(cls, weights, channels_last: bool) -> Network:
    "A network of class `cls` holding `weights`, on `DEVICE`, in the layout asked for."
    model = cls()
    model.load_state_dict(weights)
    return model.to(DEVICE, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def training_variants(weights):
    "name -> (model, optimizer, epoch function); each adds one change to the one before."
    variants = {}
    m = from_weights(Network, weights, False)
    variants['tutorial step'] = (m, torch.optim.Adam(m.parameters(), lr=LR), lambda *a: tutorial_epoch(*a, DEVICE))
    m = from_weights(Network, weights, False)
    variants['+ sums read every 50 batches'] = (m, torch.optim.Adam(m.parameters(), lr=LR), train_epoch)
    m = from_weights(Network, weights, True)
    variants['+ channels-last layout'] = (m, torch.optim.Adam(m.parameters(), lr=LR), train_epoch)
    m = from_weights(Network, weights, True)
    variants['+ fused Adam'] = (m, adam(m.parameters(), LR), train_epoch)
    m = from_weights(PoolThenRelu, weights, True)
    variants['+ pool before ReLU'] = (m, adam(m.parameters(), LR), train_epoch)
    m = from_weights(FastNetwork, weights, True)
    variants['+ fused convolution kernels (fashion_nb)'] = (m, adam(m.parameters(), LR), train_epoch)
    return variants


def prediction_variants(weights):
    "name -> model; each adds one change to the one before."
    return {'tutorial forward': from_weights(Network, weights, False),
            '+ channels-last layout': from_weights(Network, weights, True),
            '+ pool before ReLU': from_weights(PoolThenRelu, weights, True),
            '+ max_pool_2x2 (fashion_nb)': from_weights(FastNetwork, weights, True)}


def measure_compile(weights, batches) -> dict:
    "torch.compile of the network with PyTorch's operations (pool before ReLU): its first steps' seconds, then its steps, beside it uncompiled."
    eager = from_weights(PoolThenRelu, weights, True)  # what a compiler can see into: no kernels of fashion_nb's own
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model)
    # a cache of its own, empty: the compile a user's first run pays, not one an earlier run left behind
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = tempfile.mkdtemp(prefix='fashion_nb-inductor-')
    try:
        start = time.perf_counter()
        train_epoch(compiled, batches[:3], adam(compiled_model.parameters(), LR))
        wait_for(DEVICE)
        compile_seconds = time.perf_counter() - start
        times = {'eager': [], 'compiled': []}
        for _ in range(3):
            for name, (model, weights_of) in {'eager': (eager, eager), 'compiled': (compiled, compiled_model)}.items():
                optimizer = adam(weights_of.parameters(), LR)
                start = time.perf_counter()
                train_epoch(model, batches, optimizer)
                wait_for(DEVICE)
                times[name].append((time.perf_counter() - start) / len(batches) * 1000)
    except Exception as e:  # no C++ compiler, for one
        return {'error': f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    finally:
        shutil.rmtree(os.environ.pop('TORCHINDUCTOR_CACHE_DIR'), ignore_errors=True)
    return {'first_steps_seconds': compile_seconds, 'ms_per_step': {k: spread(v) for k, v in times.items()}}


ALLOCATOR_STEPS = 300


def allocator_child(keep: bool) -> dict:
    "fashion_nb's step in this process, with malloc as it comes or keeping freed memory: ms and page faults a step."
    if keep: keep_freed_memory()
    train = load_split('train', download=False)
    torch.manual_seed(0)
    model = FastNetwork().to(memory_format=torch.channels_last)
    optimizer = adam(model.parameters(), LR)
    # batches made as `fit` makes them, shuffled from the whole split: each one a new block of memory too
    batches = train.batches(BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(0))
    train_epoch(model, itertools.islice(batches, 50), optimizer)  # oneDNN's first use of each shape, malloc's first blocks
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    train_epoch(model, itertools.islice(batches, ALLOCATOR_STEPS), optimizer)
    return {'ms_per_step': (time.perf_counter() - start) / ALLOCATOR_STEPS * 1000,
            'page_faults_per_step': (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / ALLOCATOR_STEPS}


def measure_allocator(pairs: int = 5) -> dict:
    "`allocator_child` in new processes, the two settings taking turns; median and range of each."
    runs = {'malloc as it comes': [], 'freed memory kept (keep_freed_memory)': []}
    for _ in range(pairs):
        for name, mode in zip(runs, ('default', 'keep')):
            child = subprocess.run([sys.executable, os.path.abspath(__file__), '--allocator-child', mode],
                                   capture_output=True, text=True, check=True)
            runs[name].append(json.loads(child.stdout.splitlines()[-1]))
    return {name: {key: spread([r[key] for r in rs]) for key in ('ms_per_step', 'page_faults_per_step')} for name, rs in runs.items()}


def report(results: dict) -> str:
    lines = []
    for title, key, digits in (('training step (ms, median [min-max])', 'training_ms_per_step', 2),
                               ('predicting 10,000 images (ms)', 'prediction_ms_per_10000', 0)):
        lines.append(f"{title:<64}{'x tutorial':>11}")
        first = next(iter(results[key].values()))['median']  # each variant against the first, the tutorial's
        for name, s in results[key].items():
            lines.append(f"  {name:<40}{s['median']:6.{digits}f} [{s['min']:5.{digits}f}-{s['max']:5.{digits}f}]"
                         f"{first / s['median']:12.2f}")
    if 'allocator' in results:
        lines.append(f"{'fashion_nb step in new processes, median [min-max]':<52}{'ms':>12}{'page faults per step':>22}")
        for name, a in results['allocator'].items():
            ms, faults = a['ms_per_step'], a['page_faults_per_step']
            lines.append(f"  {name:<40}{ms['median']:6.2f} [{ms['min']:5.2f}-{ms['max']:5.2f}]"
                         f"{faults['median']:8.0f} [{faults['min']:4.0f}-{faults['max']:4.0f}]")
    c = results.get('compile', {})
    if 'error' in c: lines.append(f"torch.compile: not measured ({c['error']})")
    elif c:
        lines.append(f"torch.compile: first steps {c['first_steps_seconds']:.1f} s, then {c['ms_per_step']['compiled']['median']:.2f} ms "
                     f"a step against {c['ms_per_step']['eager']['median']:.2f} ms uncompiled")
    return '\n'.join(lines)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=12)
    parser.add_argument('--no-compile', action='store_true', help='skip torch.compile (it needs a C++ compiler and ~30 s)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where every variant runs')
    parser.add_argument('--out', help='default: bench/results/step.json, or step_cuda.json on a GPU')
    parser.add_argument('--allocator-child', choices=('default', 'keep'), help=argparse.SUPPRESS)  # measure_allocator's
    args = parser.parse_args()
    if args.rounds < 3: parser.error('--rounds must be at least 3: the first two only warm up')
    if args.allocator_child:
        print(json.dumps(allocator_child(args.allocator_child == 'keep')))
        sys.exit()
    args.out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results',
                                        'step.json' if args.device == 'cpu' else 'step_cuda.json')
    try: DEVICE = pick_device(args.device)  # a clear message where there is no such device
    except DeviceError as e: sys.exit(f"bench: {e}")
    train = load_split('train', download=False).to(DEVICE)
    test = load_split('test', download=False).to(DEVICE)
    torch.manual_seed(0)
    weights = Network().state_dict()
    trainers, predictors = training_variants(weights), prediction_variants(weights)
    step_ms = {name: [] for name in trainers}
    predict_ms = {name: [] for name in predictors}
    for r in range(args.rounds):
        print(f"bench-step: round {r + 1} of {args.rounds}", file=sys.stderr, flush=True)
        batches = list(train.head(STEPS * BATCH_SIZE * (r + 1)).batches(BATCH_SIZE))[-STEPS:]  # new images each round
        for name, (model, optimizer, epoch) in trainers.items():
            start = time.perf_counter()
            epoch(model, batches, optimizer)
            wait_for(DEVICE)
            step_ms[name].append((time.perf_counter() - start) / STEPS * 1000)
        for name, model in predictors.items():
            start = time.perf_counter()
            get_all_preds(model, test)  # its scores come back to the CPU, so the GPU has finished
            predict_ms[name].append((time.perf_counter() - start) * 1000)
    skip = 2  # the first rounds also pay for oneDNN's first use of each shape
    results = {'training_ms_per_step': {k: spread(v[skip:]) for k, v in step_ms.items()},
               'prediction_ms_per_10000': {k: spread(v[skip:]) for k, v in predict_ms.items()}}
    reference = get_all_preds(predictors['tutorial forward'], test)
    results['same_scores'] = {name: bool(torch.allclose(get_all_preds(m, test), reference, rtol=0, atol=1e-5))
                              for name, m in predictors.items()}
    if DEVICE.type == 'cpu':
        print("bench-step: the allocator, in new processes ...", file=sys.stderr, flush=True)
        results['allocator'] = measure_allocator()
    if not args.no_compile:
        print("bench-step: torch.compile ...", file=sys.stderr, flush=True)
        results['compile'] = measure_compile(weights, list(train.head(STEPS * BATCH_SIZE).batches(BATCH_SIZE)))
    print(report(results))
    write_json(args.out, {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                          'settings': {'rounds': args.rounds, 'steps_per_round': STEPS, 'batch_size': BATCH_SIZE,
                                       'rounds_skipped': skip, 'threads': torch.get_num_threads()},
                          'machine': machine(args.device),
                          'versions': library_versions(), **results})
    print(f"bench-step: results in {args.out}", file=sys.stderr)
