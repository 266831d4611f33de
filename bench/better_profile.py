"""Benchmark: where an epoch of the better network goes, on this machine (the first measurement of issue 29).

    python bench/better_profile.py [--steps 40] [--rounds 3] [--out bench/results/better_profile.json]

06's recipe trains `BetterNetwork` for 10 epochs of 50,000 pictures in batches of 128 (391 steps an epoch), with
AdamW (the engine's, fused), pictures mirrored at random, and the 10,000 validation pictures scored after every epoch (with their mirror
images at the end). This script times the parts of that epoch apart, in one process, on the same batches already in
memory: a training step's forward pass, backward pass and optimizer step; the mirroring of a batch; and the scoring of
10,000 pictures, as `fit` does it after every epoch (`evaluate`: float32) and in the way's own layout and precision. It does so for three ways of running the step, taking turns round after round so that a slow spell of
the machine falls on all of them: float32 in PyTorch's default layout, float32 channels-last (what `fit` uses), and
channels-last with the forward pass in bfloat16 (`precision='bfloat16'`). The medians over the rounds are kept.

It also runs PyTorch's profiler over the steps of each way and sums the operators' own time by kind (convolution,
batch normalisation, pooling, ...), forward and backward apart, so that the next change aims where the time is.
Output: a table on the terminal and `bench/results/better_profile.json`. The seconds hold for the machine recorded.
"""
import argparse
import datetime
import os
import statistics
import sys
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from fashion_nb.beyond import BetterNetwork, shift_and_flip
from fashion_nb.checkpoint import library_versions
from fashion_nb.core import write_json
from fashion_nb.data import holdout, load_split, to_float
from fashion_nb.engine import adam, evaluate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import machine, spread  # noqa: E402

BATCH, STEPS_AN_EPOCH, VALID = 128, 391, 10_000  # 06's recipe: 50,000 pictures in batches of 128; 10,000 held out
WAYS = {'float32': (torch.contiguous_format, None), 'float32 channels-last': (torch.channels_last, None),
        'bfloat16 channels-last': (torch.channels_last, torch.bfloat16)}
# the kind of each operator, by the first of these words in its name; the rest is 'other'
KINDS = (('convolution', 'convolution'), ('batch_norm', 'batch norm'), ('max_pool', 'max pool'),
         ('threshold', 'relu'), ('clamp_min', 'relu'), ('relu', 'relu'), ('addmm', 'linear'), ('aten::mm', 'linear'),
         ('dropout', 'dropout'), ('bernoulli', 'dropout'), ('softmax', 'loss'), ('nll_loss', 'loss'),
         ('copy_', 'copies and casts'), ('to_copy', 'copies and casts'), ('fill_', 'zeroing'), ('zero_', 'zeroing'),
         # AdamW's arithmetic, a parameter at a time unless foreach or fused: most of these are the optimizer's
         *((op, 'elementwise') for op in ('mul', 'div', 'add', 'sqrt', 'lerp', 'addcdiv', 'addcmul', '_foreach')))


def kind_of(name: str) -> str:
    low = name.lower()
    kind = next((k for word, k in KINDS if word in low), 'other')
    return f"{kind} (backward)" if 'backward' in low else kind


def make_model(layout, seed=0):
    torch.manual_seed(seed)
    model = BetterNetwork().to(memory_format=layout).train()
    return model, adam(model.parameters(), lr=0.005, weight_decay=0.05)  # the engine's: AdamW, fused


def timed_steps(model, optimizer, batches, dtype) -> dict:
    "Seconds a step spends in the forward pass (with the loss), the backward pass and the optimizer; medians over `batches`."
    parts = defaultdict(list)
    for images, labels in batches:
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast('cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            scores = model(images)
        loss = F.cross_entropy(scores.float(), labels, label_smoothing=0.1)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        for part, seconds in (('forward', t1 - t0), ('backward', t2 - t1), ('optimizer', t3 - t2)): parts[part].append(seconds)
    return {part: statistics.median(values) for part, values in parts.items()}


def profiled_kinds(model, optimizer, batches, dtype) -> dict:
    "Milliseconds of operators' own CPU time a step, by kind, from PyTorch's profiler."
    with profile(activities=[ProfilerActivity.CPU]) as prof: timed_steps(model, optimizer, batches, dtype)
    by_kind = defaultdict(float)
    for event in prof.key_averages(): by_kind[kind_of(event.key)] += event.self_cpu_time_total / 1000 / len(batches)
    return dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))


def scoring_seconds(model, images, dtype, flips=False) -> float:
    "Seconds to score `images` in batches of 1,000, as `evaluate` does (with the mirror images too when `flips`)."
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast('cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        for chunk in images.split(1000):
            model(chunk)
            if flips: model(chunk.flip(-1))
    model.train()
    return time.perf_counter() - start


def main(steps: int, rounds: int, out: str):
    torch.set_num_threads(os.cpu_count() or 1)
    train, valid = holdout(load_split('train', download=False), VALID)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train), generator=generator)[:steps * BATCH]
    pictures, labels = to_float(train.images[order]), train.labels[order]
    valid_pictures = to_float(valid.images)
    results = {name: defaultdict(list) for name in WAYS}
    models = {name: make_model(layout) for name, (layout, _) in WAYS.items()}
    for name, (layout, dtype) in WAYS.items():  # warm-up: oneDNN picks and caches its kernels on first use
        batches = [(pictures[:BATCH].contiguous(memory_format=layout), labels[:BATCH])] * 3
        timed_steps(*models[name], batches, dtype)
    for round_ in range(rounds):
        for name, (layout, dtype) in WAYS.items():
            model, optimizer = models[name]
            batches = [(x.contiguous(memory_format=layout), y) for x, y in zip(pictures.split(BATCH), labels.split(BATCH))]
            for part, seconds in timed_steps(model, optimizer, batches, dtype).items(): results[name][part].append(seconds)
            start = time.perf_counter()
            for x, _ in batches[:20]: shift_and_flip(x, max_shift=0, generator=generator)
            results[name]['mirroring'].append((time.perf_counter() - start) / 20)
            valid_in_layout = valid_pictures.contiguous(memory_format=layout)
            start = time.perf_counter()
            evaluate(model, valid)  # as `fit` scores after every epoch: float32, batches of 2,000 as the split gives them
            results[name]['scoring as fit does'].append(time.perf_counter() - start)
            results[name]['scoring'].append(scoring_seconds(model, valid_in_layout, dtype))
            results[name]['scoring with mirrors'].append(scoring_seconds(model, valid_in_layout, dtype, flips=True))
        print(f"round {round_ + 1} of {rounds} done", file=sys.stderr)
    summary = {}
    for name, (layout, dtype) in WAYS.items():
        parts = {part: spread(values) for part, values in results[name].items()}
        step = sum(parts[p]['median'] for p in ('forward', 'backward', 'optimizer'))
        model, optimizer = models[name]
        batches = [(x.contiguous(memory_format=layout), y) for x, y in zip(pictures.split(BATCH), labels.split(BATCH))][:10]
        summary[name] = {'seconds': parts, 'step_seconds': step,
                         'epoch_seconds_estimate': STEPS_AN_EPOCH * (step + parts['mirroring']['median'])
                                                   + parts['scoring as fit does']['median'],
                         'profile_ms_a_step': profiled_kinds(model, optimizer, batches, dtype)}
    report = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'settings': {'batch_size': BATCH, 'steps_a_round': steps, 'rounds': rounds, 'threads': torch.get_num_threads(),
                           'optimizer': 'fashion_nb.engine.adam(lr=0.005, weight_decay=0.05): AdamW, fused',
                           'loss': 'cross_entropy(label_smoothing=0.1)'},
              'machine': machine('cpu'), 'versions': library_versions(), 'ways': summary}
    write_json(out, report)
    for name, s in summary.items():
        sec = s['seconds']
        print(f"{name}: step {s['step_seconds'] * 1000:.1f} ms (forward {sec['forward']['median'] * 1000:.1f}, "
              f"backward {sec['backward']['median'] * 1000:.1f}, optimizer {sec['optimizer']['median'] * 1000:.1f}); "
              f"mirroring {sec['mirroring']['median'] * 1000:.2f} ms a batch; scoring 10,000 as fit does: "
              f"{sec['scoring as fit does']['median']:.2f} s, in this way: {sec['scoring']['median']:.2f} s "
              f"({sec['scoring with mirrors']['median']:.2f} s with mirrors); an epoch: about {s['epoch_seconds_estimate']:.1f} s")
        top = list(s['profile_ms_a_step'].items())[:8]
        print('   ' + ', '.join(f"{kind} {ms:.1f} ms" for kind, ms in top))
    print(f"better_profile: results in {out}")


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=40, help='training steps a way takes each round (default 40)')
    parser.add_argument('--rounds', type=int, default=3, help='rounds of the ways taking turns (default 3)')
    parser.add_argument('--out', default='bench/results/better_profile.json')
    args = parser.parse_args()
    main(args.steps, args.rounds, args.out)
