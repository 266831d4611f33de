"""Benchmark: what each change to the training step and to prediction buys, side by side in one process.

    python bench/step.py [--rounds 12] [--out bench/results/step.json]

Every variant starts from the same weights and sees the same batches, already in memory, so only the step itself
is measured (the data path is `bench/run.py`'s). The variants take turns, 50 steps each, round after round, so a slow
spell of the machine falls on all of them; the medians over the rounds are compared. Each variant adds one change to
the one before it, ending at fashion_nb's own code.
"""
import argparse
import copy
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from fashion_nb.core import write_json
from fashion_nb.data import load_split
from fashion_nb.inference import get_all_preds
from fashion_nb.model import Network
from fashion_nb.training import adam, library_versions, train_epoch

STEPS, BATCH_SIZE, LR = 50, 100, 0.01


class ReluThenPool(Network):
    "The forward the tutorial wrote: ReLU, then pool."
    def forward(self, t):
        t = F.max_pool2d(F.relu(self.conv1(t)), kernel_size=2, stride=2)
        t = F.max_pool2d(F.relu(self.conv2(t)), kernel_size=2, stride=2)
        return self.out(F.relu(self.fc2(F.relu(self.fc1(t.reshape(-1, 192))))))


class PoolThenRelu(Network):
    "Pool, then ReLU, with PyTorch's pool throughout."
    def forward(self, t):
        t = F.relu(F.max_pool2d(self.conv1(t), kernel_size=2, stride=2))
        t = F.relu(F.max_pool2d(self.conv2(t), kernel_size=2, stride=2))
        return self.out(F.relu(self.fc2(F.relu(self.fc1(t.reshape(-1, 192))))))


def tutorial_loop(model, optimizer, batches):
    "The tutorial's loop body: it reads the loss and the number correct after every batch."
    for images, labels in batches:
        preds = model(images)
        loss = F.cross_entropy(preds, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item(), preds.argmax(dim=1).eq(labels).sum().item()


def fashion_nb_loop(model, optimizer, batches): train_epoch(model, batches, optimizer)


def training_variants(weights):
    "name -> (model, optimizer, loop); each adds one change to the one before."
    def model(cls, channels_last):
        m = cls()
        m.load_state_dict(weights)
        return m.to(memory_format=torch.channels_last) if channels_last else m
    variants = {}
    m = model(ReluThenPool, False); variants['tutorial step'] = (m, torch.optim.Adam(m.parameters(), lr=LR), tutorial_loop)
    m = model(ReluThenPool, False); variants['+ sums read every 50 batches'] = (m, torch.optim.Adam(m.parameters(), lr=LR), fashion_nb_loop)
    m = model(ReluThenPool, True); variants['+ channels-last layout'] = (m, torch.optim.Adam(m.parameters(), lr=LR), fashion_nb_loop)
    m = model(ReluThenPool, True); variants['+ fused Adam'] = (m, adam(m.parameters(), LR), fashion_nb_loop)
    m = model(Network, True); variants['+ pool before ReLU (fashion_nb)'] = (m, adam(m.parameters(), LR), fashion_nb_loop)
    return variants


def prediction_variants(weights):
    def model(cls, channels_last):
        m = cls()
        m.load_state_dict(weights)
        return m.to(memory_format=torch.channels_last) if channels_last else m
    return {'tutorial forward': model(ReluThenPool, False), '+ channels-last layout': model(ReluThenPool, True),
            '+ pool before ReLU': model(PoolThenRelu, True), '+ max_pool_2x2 (fashion_nb)': model(Network, True)}


def spread(values) -> dict: return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


def measure_compile(weights, batches) -> dict:
    "torch.compile of fashion_nb's network: the seconds its first steps take, then its steps, beside the same model uncompiled."
    eager = Network()
    eager.load_state_dict(weights)
    eager = eager.to(memory_format=torch.channels_last)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model)
    # a cache of its own, empty: the compile a user's first run pays, not one an earlier run left behind
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = tempfile.mkdtemp(prefix='fashion_nb-inductor-')
    try:
        start = time.perf_counter()
        fashion_nb_loop(compiled, adam(compiled_model.parameters(), LR), batches[:3])
        compile_seconds = time.perf_counter() - start
    except Exception as e:  # no C++ compiler, for one
        return {'error': f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    times = {'eager': [], 'compiled': []}
    for _ in range(3):
        for name, (m, params) in {'eager': (eager, eager.parameters()), 'compiled': (compiled, compiled_model.parameters())}.items():
            optimizer = adam(params, LR)
            start = time.perf_counter()
            fashion_nb_loop(m, optimizer, batches)
            times[name].append((time.perf_counter() - start) / len(batches) * 1000)
    shutil.rmtree(os.environ.pop('TORCHINDUCTOR_CACHE_DIR'), ignore_errors=True)
    return {'first_steps_seconds': compile_seconds, 'ms_per_step': {k: spread(v) for k, v in times.items()}}


def report(results: dict) -> str:
    lines = [f"{'training step (ms, median [min-max])':<42}{'':>22}{'x tutorial':>11}"]
    first = None
    for name, s in results['training_ms_per_step'].items():
        first = first or s['median']
        lines.append(f"  {name:<40}{s['median']:6.2f} [{s['min']:5.2f}-{s['max']:5.2f}]{'':>3}{first / s['median']:9.2f}")
    lines.append(f"{'predicting 10,000 images (ms)':<42}")
    first = None
    for name, s in results['prediction_ms_per_10000'].items():
        first = first or s['median']
        lines.append(f"  {name:<40}{s['median']:6.0f} [{s['min']:5.0f}-{s['max']:5.0f}]{'':>3}{first / s['median']:9.2f}")
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
    parser.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'step.json'))
    args = parser.parse_args()
    train = load_split('train', download=False)
    test = load_split('test', download=False)
    torch.manual_seed(0)
    weights = Network().state_dict()
    trainers, predictors = training_variants(weights), prediction_variants(weights)
    step_ms = {name: [] for name in trainers}
    predict_ms = {name: [] for name in predictors}
    for r in range(args.rounds):
        print(f"bench-step: round {r + 1} of {args.rounds}", file=sys.stderr, flush=True)
        batches = list(train.head(STEPS * BATCH_SIZE * (r + 1)).batches(BATCH_SIZE))[-STEPS:]  # new images each round
        for name, (model, optimizer, loop) in trainers.items():
            start = time.perf_counter()
            loop(model, optimizer, batches)
            step_ms[name].append((time.perf_counter() - start) / STEPS * 1000)
        for name, model in predictors.items():
            start = time.perf_counter()
            get_all_preds(model, test)
            predict_ms[name].append((time.perf_counter() - start) * 1000)
    skip = 2  # the first rounds also pay for oneDNN's first use of each shape
    results = {'training_ms_per_step': {k: spread(v[skip:]) for k, v in step_ms.items()},
               'prediction_ms_per_10000': {k: spread(v[skip:]) for k, v in predict_ms.items()}}
    reference = get_all_preds(predictors['tutorial forward'], test)
    results['same_scores'] = {name: bool(torch.allclose(get_all_preds(m, test), reference, rtol=0, atol=1e-5))
                              for name, m in predictors.items()}
    if not args.no_compile:
        print("bench-step: torch.compile ...", file=sys.stderr, flush=True)
        results['compile'] = measure_compile(weights, list(train.head(STEPS * BATCH_SIZE).batches(BATCH_SIZE)))
    print(report(results))
    write_json(args.out, {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                          'settings': {'rounds': args.rounds, 'steps_per_round': STEPS, 'batch_size': BATCH_SIZE,
                                       'rounds_skipped': skip, 'threads': torch.get_num_threads()},
                          'machine': {'platform': platform.platform(), 'processor': platform.processor() or platform.machine(),
                                      'cpus': os.cpu_count()},
                          'versions': library_versions(), **results})
    print(f"bench-step: results in {args.out}", file=sys.stderr)
