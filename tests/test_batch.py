"Batch runs: grid expansion, refusals, resume, failure isolation, timeouts and the Dask path, on small real runs."
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fashion_nb.batch import expand_grid, parse_grid, read_summary, run_batch
from fashion_nb.run import ParamError

SMALL = {'limit': [300], 'epochs': [1]}  # each run trains one epoch on 300 images: seconds, not minutes


def comparable(rows):
    "Summary rows without what differs from one execution to the next (time, where, skipped or done)."
    return [{k: v for k, v in r.items() if k not in ('seconds', 'notebook', 'status', 'reason')} for r in rows]


def test_grid_expansion_is_the_full_product():
    grid = parse_grid([('lr', '0.1,0.2,0.3'), ('seed', '0,1'), ('device', 'cpu')])
    runs = expand_grid(grid)
    assert len(runs) == 6 and len({tuple(sorted(r.items())) for r in runs}) == 6
    assert {r['lr'] for r in runs} == {0.1, 0.2, 0.3} and all(r['device'] == 'cpu' for r in runs)


@pytest.mark.parametrize('grid, message', [
    ({'learning_rate': [0.1]}, "unknown parameter 'learning_rate'"),
    ({'epochs': ['one']}, "'epochs' is declared int, but 'one' is str"),
    ({'lr': [0.1, 'fast']}, "'lr' is declared float, but 'fast' is str"),
])
def test_refused_before_anything_runs(tmp_path, grid, message):
    with pytest.raises(ParamError, match=message):
        run_batch(grid, tmp_path/'batch', progress=False)
    assert not (tmp_path/'batch').exists()


@pytest.fixture(scope='module')
def local_batch(tmp_path_factory, real_data_available):
    out = tmp_path_factory.mktemp('local')
    grid = {'lr': [0.01, 0.02], 'seed': [0], **SMALL}
    return grid, out, run_batch(grid, out, workers=2, progress=False)


def test_local_batch_runs_every_combination(local_batch):
    grid, out, rows = local_batch
    assert [r['status'] for r in rows] == ['done', 'done']
    assert sorted(p.name for p in out.iterdir()) == sorted([r['run'] for r in rows] + ['summary.csv', 'summary.png'])
    for r in rows:
        assert (out/r['run']/'metrics.json').is_file() and Path(r['notebook']).is_file()
        assert 0.1 < r['test_accuracy'] < 1 and 0 < r['final_train_accuracy'] <= 1
    assert (out/'summary.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert comparable(read_summary(out/'summary.csv')) == comparable(rows)


def test_rerun_skips_finished_runs_and_force_reruns(local_batch):
    grid, out, rows = local_batch
    started = time.perf_counter()
    again = run_batch(grid, out, workers=2, progress=False)
    assert [r['status'] for r in again] == ['skipped', 'skipped']
    assert time.perf_counter() - started < 30  # nothing ran: no kernel started, no training
    assert comparable(again) == comparable(rows)
    forced = run_batch({**grid, 'lr': [0.01]}, out, workers=1, force=True, progress=False)
    assert [r['status'] for r in forced] == ['done']
    assert forced[0]['test_accuracy'] == rows[0]['test_accuracy']  # same seed, same threads: the same run


def test_dask_local_cluster_gives_the_same_summary(local_batch, tmp_path):
    distributed = pytest.importorskip('distributed')
    grid, _, rows = local_batch
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask_rows = run_batch(grid, tmp_path, scheduler=cluster.scheduler_address, progress=False)
    assert [r['status'] for r in dask_rows] == ['done', 'done']
    assert comparable(dask_rows) == comparable(rows)


def test_failed_run_is_isolated_and_the_command_exits_nonzero(tmp_path, real_data_available):
    "`fashion-nb batch` as installed, with a YAML file and -p together; one run is given a bad value."
    (tmp_path/'grid.yml').write_text('epochs: [1, 0]\nlimit: 300\n')
    command = Path(sys.executable).parent/'fashion-nb'
    result = subprocess.run([command, 'batch', '-f', tmp_path/'grid.yml', '-p', 'seed', '3', '--workers', '2',
                             '--no-progress', '--out', tmp_path/'out'], capture_output=True, text=True)
    assert result.returncode == 1
    rows = {r['epochs']: r for r in read_summary(tmp_path/'out'/'summary.csv')}
    assert rows[1]['status'] == 'done' and rows[1]['test_accuracy'] > 0.1
    assert rows[0]['status'] == 'failed' and 'ParamError: epochs must be at least 1, got 0' in rows[0]['reason']
    assert Path(rows[0]['notebook']).is_file()  # the executed notebook, with its error, is kept
    assert re.search(r'run epochs=0_limit=300_seed=3 failed: cell \d+ failed: ParamError', result.stderr)
    assert '1 of 2 runs finished' in result.stdout


def test_timeout_stops_a_run_and_marks_it(tmp_path, real_data_available):
    rows = run_batch({'limit': [0], 'epochs': [3]}, tmp_path, workers=1, timeout=3, progress=False)
    assert rows[0]['status'] == 'failed' and 'timeout of 3 s' in rows[0]['reason']
