"""What a sweep reads, checked: the cgroup limits that size it (made-up v1 and v2 trees), metrics.json files that are not
a run's (rerun, exit 0), the test accuracy, which the tables show for the chosen setting alone, and its parameters, each
planned run refused before any kernel starts when the table of parameters does not allow a value."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_nb import sizing
from fashion_nb.core import write_json
from fashion_nb.report import choose, compare_settings, read_summary, runs_of, write_conclusions, write_summary
from fashion_nb.resume import finished_metrics, read_metrics, reason_to_run, run_name, skipped_row

GiB = 2**30
MEMINFO = f"MemTotal:       16318412 kB\nMemAvailable:    {8 * GiB // 1024} kB\n"  # 8 GiB available to the whole machine


class Tree:
    "A made-up /proc/self and cgroup mounts under tmp_path: write the group files, then ask sizing about them."
    def __init__(self, tmp_path: Path, groups: str, mounts: list[tuple[str, str, str, str]]):
        "`groups`: /proc/self/cgroup's text; `mounts`: (type, super options, the group at the mount's root, mount point name)."
        self.base, self.proc = tmp_path, tmp_path/'proc'
        self.proc.mkdir(parents=True)
        (self.proc/'cgroup').write_text(groups)
        lines = [f"{30 + i} 25 0:{40 + i} {root} {tmp_path/point} rw,nosuid,relatime shared:{i} - {kind} {kind} {options}"
                 for i, (kind, options, root, point) in enumerate(mounts)]
        (self.proc/'mountinfo').write_text('\n'.join(['22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw', *lines]) + '\n')
        (tmp_path/'meminfo').write_text(MEMINFO)

    def write(self, where: str, **files):
        "Files of one group folder, `cpu_max='...'` for cpu.max."
        folder = self.base/where
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items(): (folder/name.replace('_', '.', 1)).write_text(f"{text}\n")

    def cpus(self, cores: int = 8) -> int:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, 'sched_getaffinity', lambda pid: set(range(cores)), raising=False)
            return sizing.usable_cpus(self.base/'no-root', self.proc)

    def memory(self) -> int: return sizing.available_memory(self.base/'meminfo', self.base/'no-root', self.proc)


V2 = ('cgroup2', 'rw,nsdelegate', '/', 'cg')


def test_v2_a_limit_set_only_on_a_parent_holds(tmp_path):
    tree = Tree(tmp_path, '0::/user.slice/job.scope\n', [V2])
    tree.write('cg/user.slice/job.scope', cpu_max='max 100000', memory_max='max', memory_current=str(GiB))
    assert (tree.cpus(), tree.memory()) == (8, 8 * GiB)  # no limit anywhere yet
    tree.write('cg/user.slice', cpu_max='300000 100000', memory_max=str(4 * GiB), memory_current=str(GiB))
    assert (tree.cpus(), tree.memory()) == (3, 3 * GiB)  # the parent's: 3 CPUs, 4 GiB less the 1 GiB it uses
    assert sizing.runs_at_once(tree.cpus(), tree.memory()) == 2  # two kept kernels fit in 3 GiB, not three


def test_v2_the_tightest_of_the_groups_wins_and_max_is_no_limit(tmp_path):
    tree = Tree(tmp_path, '0::/a/b\n', [V2])
    tree.write('cg', cpu_max='max 100000')  # the root has no cpu.max on a real host; 'max' means the same
    tree.write('cg/a', cpu_max='400000 100000', memory_max=str(2 * GiB), memory_current=str(GiB // 2))
    tree.write('cg/a/b', cpu_max='150000 100000', memory_max=str(6 * GiB), memory_current=str(GiB))
    assert (tree.cpus(), tree.memory()) == (2, GiB + GiB // 2)  # b's 1.5 CPUs counted as 2; a leaves 1.5 GiB
    assert tree.cpus(cores=1) == 1  # the affinity still caps it
    assert [p.relative_to(tmp_path).as_posix() for p in sizing.cgroup_folders('cpu', tmp_path/'no-root', tree.proc)] == \
        ['cg/a/b', 'cg/a', 'cg']


@pytest.mark.parametrize('quota, cpus', [(-1, 8), (150000, 2), (100000, 1), (50000, 1), (400000, 4)])
def test_v1_cpu_quota(tmp_path, quota, cpus):
    "-1 is no limit; a quota of 1.5 periods is 2 CPUs, rounded up as on v2."
    tree = Tree(tmp_path, '5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n',
                [('cgroup', 'rw,cpu,cpuacct', '/', 'cpu,cpuacct'), ('cgroup', 'rw,memory', '/', 'memory'),
                 ('cgroup2', 'rw', '/', 'unified')])  # a hybrid host: v1's cpu controller, not the v2 hierarchy, limits
    tree.write('unified/docker/abc', cpu_max='100000 100000')
    tree.write('cpu,cpuacct/docker/abc', cpu_cfs_quota_us=str(quota), cpu_cfs_period_us='100000')
    assert tree.cpus() == cpus


def test_v1_memory_limit_nested_and_inside_a_container(tmp_path):
    tree = Tree(tmp_path, '4:memory:/process_api/job\n3:cpu:/\n', [('cgroup', 'rw,memory', '/', 'memory')])
    unlimited = 9223372036854771712  # what v1 shows without a limit
    tree.write('memory', memory_limit_in_bytes=str(unlimited), memory_usage_in_bytes=str(5 * GiB))
    tree.write('memory/process_api/job', memory_limit_in_bytes=str(unlimited), memory_usage_in_bytes=str(GiB))
    assert tree.memory() == 8 * GiB  # no limit: MemAvailable
    tree.write('memory/process_api', memory_limit_in_bytes=str(2 * GiB), memory_usage_in_bytes=str(GiB // 2))
    assert tree.memory() == GiB + GiB // 2
    assert tree.cpus() == 8  # no cpu hierarchy mounted: the root folder given, which does not exist either
    # a container's own view: the mount's root is its group, so the group's files are at the mount point itself
    inside = Tree(tmp_path/'container', '4:memory:/docker/abc\n', [('cgroup', 'rw,memory', '/docker/abc', 'memory')])
    inside.write('memory', memory_limit_in_bytes=str(3 * GiB), memory_usage_in_bytes=str(GiB))
    assert inside.memory() == 2 * GiB


def test_odd_proc_files_fall_back_without_escaping_the_mount(tmp_path):
    # a group above the mount's root (as a cgroup namespace shows it) is read at the mount point, never outside it
    tree = Tree(tmp_path, '0::/../../outside\n', [('cgroup2', 'rw', '/', 'my cg')])
    tree.write('my cg', cpu_max='200000 100000')  # a space in the mount point: \040 in mountinfo
    (tree.proc/'mountinfo').write_text((tree.proc/'mountinfo').read_text().replace('my cg', 'my\\040cg'))
    assert tree.cpus() == 2
    (tree.proc/'cgroup').write_text('garbage\n')  # nothing to go by: the root folder given is read instead
    assert tree.cpus() == 8
    root = tmp_path/'root'
    root.mkdir()
    (root/'cpu.max').write_text('100000 100000\n')
    assert sizing.usable_cpus(root, tree.proc) == 1


def test_missing_files_give_the_machines_own_figures(tmp_path, monkeypatch):
    monkeypatch.delattr(os, 'sched_getaffinity', raising=False)  # as on macOS: os.cpu_count()
    assert sizing.usable_cpus(tmp_path/'none', tmp_path/'none') == (os.cpu_count() or 1)
    (tmp_path/'meminfo').write_text(MEMINFO)
    assert sizing.available_memory(tmp_path/'meminfo', tmp_path/'none', tmp_path/'none') == 8 * GiB


# what a run writes, as far as a batch reads it; each shape below is not that
MEASURED = {'test_accuracy': 0.8, 'train_accuracy': 0.85, 'val_accuracy': 0.81, 'history': [{'accuracy': 0.84}],
            'seconds': {'total': 12.5}, 'threads': 1, 'device': 'cpu'}
MALFORMED = {
    'a list': ([], 'the file is [], not an object'),
    'an empty object': ({}, 'test_accuracy is missing'),
    'no epochs': ({**MEASURED, 'history': []}, 'history is [], not a list of at least one item'),
    'a number as text': ({**MEASURED, 'test_accuracy': '0.8'}, 'test_accuracy is "0.8", not a number'),
    'no test accuracy': ({k: v for k, v in MEASURED.items() if k != 'test_accuracy'}, 'test_accuracy is missing'),
    'not finite': ({**MEASURED, 'val_accuracy': math.nan}, 'val_accuracy is NaN, not a finite number'),
    'infinite seconds': ({**MEASURED, 'seconds': {'total': math.inf}}, 'seconds.total is Infinity, not a finite number'),
    'an epoch of text': ({**MEASURED, 'history': ['0.84']}, 'history[0] is "0.84", not an object'),
    'true as a number': ({**MEASURED, 'train_accuracy': True}, 'train_accuracy is true, not a number'),
    'null': (None, 'the file is null, not an object'),
}


@pytest.mark.parametrize('shape', MALFORMED)
def test_metrics_that_are_not_a_runs_are_a_reason_to_rerun(tmp_path, shape):
    metrics, problem = MALFORMED[shape]
    write_json(tmp_path/'lr=0.1'/'metrics.json', metrics)
    assert reason_to_run({'lr': 0.1}, tmp_path) == f"unreadable metrics ({problem}): rerun"
    assert finished_metrics(tmp_path/'lr=0.1') is None
    with pytest.raises(Exception, match=r'^unreadable metrics \('): skipped_row({'lr': 0.1}, tmp_path)  # never a KeyError


def test_a_runs_metrics_are_read(tmp_path):
    write_json(tmp_path/'lr=0.1'/'metrics.json', {**MEASURED, 'val_accuracy': None, 'kernel_runs': 2})  # more is fine
    assert read_metrics(tmp_path/'lr=0.1')['kernel_runs'] == 2
    assert reason_to_run({'lr': 0.1}, tmp_path) == 'stale: no fingerprint'  # readable: judged on its fingerprint
    assert skipped_row({'lr': 0.1}, tmp_path)['test_accuracy'] == 0.8
    (tmp_path/'lr=0.1'/'metrics.json').write_bytes(b'\xff\xfe not text')
    assert reason_to_run({'lr': 0.1}, tmp_path) == 'unreadable metrics (UnicodeDecodeError): rerun'


def test_malformed_metrics_are_rerun_and_the_batch_exits_0(tmp_path, real_data_available):
    """Three runs whose folders hold a metrics.json of three wrong shapes: each runs again, its row says why, the command
    exits 0; with a validation split, the tables show the chosen setting's test accuracy alone."""
    out = tmp_path/'out'
    shapes = {0.003: '[]', 0.01: json.dumps({**MEASURED, 'history': []}), 0.03: json.dumps({**MEASURED, 'test_accuracy': '0.8'})}
    names = {lr: run_name({'epochs': 1, 'limit': 1000, 'lr': lr, 'seed': 0, 'val_size': 1000}) for lr in shapes}
    for lr, text in shapes.items():
        (out/names[lr]).mkdir(parents=True)
        (out/names[lr]/'metrics.json').write_text(text)
    command = [Path(sys.executable).parent/'fashion-nb', 'batch', '-p', 'lr', '0.003,0.01,0.03', '-p', 'seed', '0', '-p', 'limit',
               '1000', '-p', 'epochs', '1', '-p', 'val_size', '1000', '--workers', '1', '--no-progress', '--out', out]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0 and 'Traceback' not in result.stderr, result.stderr
    rows = {r['run']: r for r in read_summary(out/'summary.csv')}
    assert sorted(rows) == sorted(names.values())
    assert {r['status'] for r in rows.values()} == {'done'}
    assert rows[names[0.003]]['reason'] == 'unreadable metrics (the file is [], not an object): rerun'
    assert rows[names[0.01]]['reason'] == 'unreadable metrics (history is [], not a list of at least one item): rerun'
    assert rows[names[0.03]]['reason'] == 'unreadable metrics (test_accuracy is "0.8", not a number): rerun'
    assert all(read_metrics(out/name) is not None for name in names.values())  # rewritten by the runs: a run's now
    # the test split read once: one setting of three is chosen, and only its run shows a test accuracy, as report.md does
    chosen = [r for r in rows.values() if r['test_accuracy'] != '']
    assert len(chosen) == 1 and chosen[0]['val_accuracy'] == max(r['val_accuracy'] for r in rows.values())
    settings = read_summary(out/'settings.csv')
    assert [s['test_mean'] for s in settings][1:] == ['', ''] and settings[0]['lr'] == chosen[0]['lr']
    assert settings[0]['test_mean'] == chosen[0]['test_accuracy'] == read_metrics(out/chosen[0]['run'])['test_accuracy']
    assert f"read once for the chosen setting: {chosen[0]['test_accuracy']:.4f}" in (out/'report.md').read_text()


def fake_rows(folder: Path, val_size: int) -> list[dict]:
    "Four finished runs of two settings, made up, with their metrics.json written as runs write them."
    rows = []
    for i, (lr, seed, val, test) in enumerate([(0.001, 0, 0.71, 0.70), (0.001, 1, 0.73, 0.72), (0.01, 0, 0.80, 0.79),
                                               (0.01, 1, 0.82, 0.80)]):
        row = {'run': f'r{i}', 'lr': lr, 'seed': seed, 'val_size': val_size, 'status': 'done',
               'val_accuracy': val if val_size else None, 'test_accuracy': test,
               'notebook': str(folder/f'r{i}'/'end_to_end.ipynb')}
        epoch = {'accuracy': 0.84, **({'valid_accuracy': val} if val_size else {})}
        write_json(folder/f'r{i}'/'metrics.json', {**MEASURED, 'val_accuracy': row['val_accuracy'], 'test_accuracy': test,
                                                  'history': [epoch]})
        rows.append(row)
    return rows


def test_the_tables_show_the_test_accuracy_of_the_chosen_setting_only(tmp_path):
    rows = fake_rows(tmp_path, 1000)
    write_conclusions(rows, tmp_path)
    write_summary(rows, tmp_path/'summary.csv')
    chosen = choose(compare_settings(rows), rows)
    assert [r['run'] for r in runs_of(chosen, rows)] == ['r2', 'r3']
    assert [r['test_accuracy'] for r in read_summary(tmp_path/'summary.csv')] == ['', '', 0.79, 0.80]
    assert [(s['lr'], s['test_mean']) for s in read_summary(tmp_path/'settings.csv')] == [(0.01, chosen['test_mean']), (0.001, '')]
    assert [r['test_accuracy'] for r in rows] == [0.70, 0.72, 0.79, 0.80]  # the rows returned keep them; beyond.py reads those


def test_without_a_validation_split_the_tables_are_as_before(tmp_path):
    rows = fake_rows(tmp_path, 0)
    write_conclusions(rows, tmp_path)
    write_summary(rows, tmp_path/'summary.csv')
    assert [r['test_accuracy'] for r in read_summary(tmp_path/'summary.csv')] == [0.70, 0.72, 0.79, 0.80]
    assert (tmp_path/'settings.csv').read_text().splitlines()[0] == 'rank,lr,runs,val_mean,val_std'


def test_numbers_yaml_reads_as_text_are_numbers(tmp_path):
    "YAML reads `lr: 1e-3` as text (it wants 1.0e-3); the batch takes it as `-p lr 1e-3` gives it, a number."
    from fashion_nb.batch import planned_runs
    from fashion_nb.grid import parse_grid
    (tmp_path/'sweep.yaml').write_text('lr: [1e-3, 3e-3]\nweight_decay: 5e-2\nseed: 0\n')
    runs, _ = planned_runs(parse_grid(yaml_file=tmp_path/'sweep.yaml'))
    assert sorted(r['lr'] for r in runs) == [0.001, 0.003] and {r['weight_decay'] for r in runs} == {0.05}


def test_numbers_as_text_are_refused_by_the_table_itself():
    "Only the YAML reader makes numbers of text, where the file is read: the table's check does not guess."
    from fashion_nb.params import ParamError, check_values
    with pytest.raises(ParamError, match=r"^lr must be a number, got '1e-3'$"):
        check_values(lr='1e-3')
    assert check_values(lr=1e-3) == {'lr': 0.001}


@pytest.mark.parametrize('sweep, pairs, message', [
    ('- {lr: 0.01}\n- {lr: -0.1}\n', [], 'setting 1: lr must be positive, got -0.1'),  # an ablation: which setting
    ('lr: [0.01, -0.1]\n', [], 'lr must be positive, got -0.1'),  # one grid: plain
    ('lr: 0.01\n', ['-p', 'epochs', '0'], 'epochs must be at least 1, got 0'),
    ('dropout: "uniform:0.5:1"\n', ['--sample', '2'], 'dropout must be from 0 to below 1, got 1.0 (an end of the range uniform:0.5:1)'),
])
def test_a_bad_value_stops_the_batch_before_any_kernel_starts(tmp_path, monkeypatch, capsys, sweep, pairs, message):
    "One line naming the setting, status 1, no batch folder, and no worker or kernel asked for."
    from fashion_nb import batch, worker
    from fashion_nb.cli import main
    def started(*args, **kwargs): raise AssertionError('a worker or a kernel was started')
    monkeypatch.setattr(batch, 'local_pool', started)
    monkeypatch.setattr(worker, 'KeptKernel', started)
    (tmp_path/'sweep.yaml').write_text(sweep)
    assert main(['batch', '-f', str(tmp_path/'sweep.yaml'), *pairs, '--no-progress', '--out', str(tmp_path/'out')]) == 1
    assert capsys.readouterr().err == f"fashion-nb: {message}\n"
    assert not (tmp_path/'out').exists()
