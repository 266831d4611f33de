"""Benchmark: the tutorial's loop against fashion_nb's path, in one run on one machine, over several seeds.

    python bench/run.py [--seeds 0 1 2 ...] [--out bench/results/latest.json]   # default: seeds 0 to 10
    python bench/run.py --device cuda       # both paths on the GPU; writes bench/results/latest_cuda.json

Each (path, seed) runs in a fresh process; the two paths alternate so that a slow spell of the
machine falls on both. Prints a table of medians and spreads and the ratios, and writes it all as JSON.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from fashion_nb.checkpoint import library_versions
from fashion_nb.core import DeviceError, write_json
from fashion_nb.engine import pick_device

HERE = Path(__file__).resolve().parent
PATHS = ('tutorial', 'fashion_nb')
# Seeds alone move a path's test accuracy by about a point (standard deviations of 1.15 points over 7 seeds of the
# tutorial's loop, 0.86 over 12 of fashion_nb's, measured here). Were both paths equal, the medians of 3 seeds would
# differ by more than the 1-point tolerance in about 28% of runs; of 11 seeds, in about 5%.
SEEDS = list(range(11))


def measure(path: str, seed: int, device: str = 'cpu') -> dict:
    out = subprocess.run([sys.executable, str(HERE/'train_predict.py'), '--path', path, '--seed', str(seed),
                          '--device', device], capture_output=True, text=True)
    if out.returncode != 0:
        why = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit status {out.returncode}, nothing on stderr"
        sys.exit(f"bench: the {path} run with seed {seed} failed:\n{why}")  # killed for memory, say, says nothing
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine(device: str = 'cpu') -> dict:
    "What the numbers were measured on: the platform, the processor, its instruction set and, on a GPU, its name."
    import torch
    about = {'platform': platform.platform(), 'processor': platform.processor() or platform.machine(),
             'cpus': os.cpu_count(), 'device': device,
             'cpu': torch.backends.cpu.get_cpu_capability()}  # AVX2, AVX512, ...: the kernels torch runs, and their rounding
    if torch.device(device).type == 'cuda': about['device_name'] = torch.cuda.get_device_name(device)
    return about


def spread(values) -> dict:
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


def summarise(runs: list[dict]) -> dict:
    "Median and range of each measure, per path, and the ratios tutorial / fashion_nb of the medians."
    per_path = {}
    for path in PATHS:
        mine = [r for r in runs if r['path'] == path]
        per_path[path] = {
            'seconds_per_epoch': spread([statistics.mean(r['epoch_seconds']) for r in mine]),
            'predict_70000_seconds': spread([r['predict_seconds'] for r in mine]),
            'max_rss_mb': spread([r['max_rss_mb'] for r in mine]),
            **({'max_gpu_mb': spread([r['max_gpu_mb'] for r in mine])} if 'max_gpu_mb' in mine[0] else {}),
            'final_epoch_accuracy': spread([r['final_epoch_accuracy'] for r in mine]),
            'train_accuracy': spread([r['train_accuracy'] for r in mine]),
            'test_accuracy': spread([r['test_accuracy'] for r in mine]),
        }
    t, f = per_path['tutorial'], per_path['fashion_nb']
    ratios = {
        'training_speedup': t['seconds_per_epoch']['median'] / f['seconds_per_epoch']['median'],
        'prediction_speedup': t['predict_70000_seconds']['median'] / f['predict_70000_seconds']['median'],
        'peak_memory_ratio': f['max_rss_mb']['median'] / t['max_rss_mb']['median'],
        'test_accuracy_difference_points': 100 * (f['test_accuracy']['median'] - t['test_accuracy']['median']),
    }
    if 'max_gpu_mb' in f: ratios['peak_gpu_memory_ratio'] = f['max_gpu_mb']['median'] / t['max_gpu_mb']['median']
    return {'per_path': per_path, 'ratios': ratios}


def report(summary: dict) -> str:
    rows = [('seconds per epoch', 'seconds_per_epoch', '{:.2f}'), ('predict 70,000 images (s)', 'predict_70000_seconds', '{:.2f}'),
            ('peak memory (MB RSS)', 'max_rss_mb', '{:.0f}'), ('peak GPU memory (MB)', 'max_gpu_mb', '{:.0f}'),
            ('final-epoch train accuracy', 'final_epoch_accuracy', '{:.4f}'),
            ('train accuracy after training', 'train_accuracy', '{:.4f}'), ('test accuracy', 'test_accuracy', '{:.4f}')]
    lines = [f"{'median [min-max]':<30} {'tutorial loop':>26} {'fashion_nb':>26}"]
    for label, key, fmt in rows:
        if key not in summary['per_path']['tutorial']: continue
        cells = []
        for path in PATHS:
            s = summary['per_path'][path][key]
            cells.append(f"{fmt.format(s['median'])} [{fmt.format(s['min'])}-{fmt.format(s['max'])}]")
        lines.append(f"{label:<30} {cells[0]:>26} {cells[1]:>26}")
    r = summary['ratios']
    lines += ['', f"training {r['training_speedup']:.2f}x faster, prediction {r['prediction_speedup']:.2f}x faster, "
                  f"peak memory {r['peak_memory_ratio']:.2f}x the tutorial's, "
                  f"median test accuracy {r['test_accuracy_difference_points']:+.2f} points"]
    return '\n'.join(lines)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=SEEDS, help='default: 0 to 10')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where both paths train')
    parser.add_argument('--out', help='default: bench/results/latest.json, or latest_cuda.json on a GPU')
    args = parser.parse_args()
    args.out = args.out or str(HERE/'results'/('latest.json' if args.device == 'cpu' else 'latest_cuda.json'))
    try: pick_device(args.device)  # a clear message, before any run, where there is no such device
    except DeviceError as e: sys.exit(f"bench: {e}")
    runs = []
    for i, seed in enumerate(args.seeds):
        for path in (PATHS if i % 2 == 0 else PATHS[::-1]):
            print(f"bench: {path}, seed {seed} (run {len(runs) + 1} of {2 * len(args.seeds)}) ...", file=sys.stderr, flush=True)
            runs.append(measure(path, seed, args.device))
    summary = summarise(runs)
    print(report(summary))
    write_json(args.out, {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                          'settings': {'epochs': 5, 'batch_size': 100, 'lr': 0.01, 'train_images': 60000, 'seeds': args.seeds},
                          'machine': {**machine(args.device), 'threads': runs[0]['threads']},
                          'versions': library_versions(), **summary, 'runs': runs})
    print(f"bench: results in {args.out}", file=sys.stderr)
