"Batch runs: grid expansion, refusals, resume, staleness, kills, sampling, failure isolation, timeouts and the Dask path (lost workers and Ctrl-C included), on small real runs."
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from fashion_nb.batch import run_batch
from fashion_nb.cluster import ClusterError
from fashion_nb.core import project_root
from fashion_nb.grid import expand_grid, parse_grid
from fashion_nb.report import choose, compare_settings, read_summary, report, runs_of
from fashion_nb.resume import finished_metrics
from fashion_nb.params import END_TO_END, ParamError
from fashion_nb.sizing import usable_cpus
from test_end_to_end import leftovers, processes_tagged, short_notebook, traced  # noqa: F401 (traced: a fixture)

SMALL = {'limit': [1000], 'epochs': [1], 'val_size': [1000]}  # one epoch on 1,000 images, 1,000 to validate: seconds a run
FILES = ['curves.png', 'report.md', 'settings.csv', 'summary.csv', 'summary.png']


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
    ({'epochs': ['one']}, "epochs must be a whole number, got 'one'"),
    ({'lr': [0.1, 'fast']}, "lr must be a number, got 'fast'"),
    ({'lr': [0.1, -0.1]}, 'lr must be positive, got -0.1'),
    ([{'lr': [0.1]}, {'epochs': [0]}], 'setting 1: epochs must be at least 1, got 0'),
])
def test_refused_before_anything_runs(tmp_path, grid, message):
    with pytest.raises(ParamError, match=message):
        run_batch(grid, tmp_path/'batch', progress=False)
    assert not (tmp_path/'batch').exists()


@pytest.fixture(scope='module')
def local_batch(tmp_path_factory, real_data_available):
    out = tmp_path_factory.mktemp('local')
    grid = {'lr': [0.003, 0.01], 'seed': [0], **SMALL}
    return grid, out, run_batch(grid, out, workers=2, progress=False)


def test_local_batch_runs_every_combination(local_batch):
    grid, out, rows = local_batch
    assert [r['status'] for r in rows] == ['done', 'done']
    assert sorted(p.name for p in out.iterdir()) == sorted([r['run'] for r in rows] + FILES)
    for r in rows:
        assert (out/r['run']/'metrics.json').is_file() and Path(r['notebook']).is_file()
        assert 0.1 < r['test_accuracy'] < 1 and 0 < r['final_train_accuracy'] <= 1 and 0.1 < r['val_accuracy'] < 1
        assert r['threads'] == max(1, usable_cpus() // 2) and r['device'] == 'cpu' and len(r['fingerprint']) == 12 and r['start_attempts'] == 1
        assert 2**27 < finished_metrics(out/r['run'])['kernel_peak_memory'] < 2**34  # the kept kernel's peak: 128 MiB to 16 GiB
    settings = read_summary(out/'settings.csv')
    assert [s['rank'] for s in settings] == [1, 2] and settings[0]['val_mean'] >= settings[1]['val_mean']
    report = (out/'report.md').read_text()
    assert f"chosen: lr={settings[0]['lr']}" in report and 'final estimate, the test split read once' in report
    assert (out/'summary.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    chosen = {r['run'] for r in runs_of(choose(compare_settings(rows), rows), rows)}  # the test split read once, in the table too
    assert comparable(read_summary(out/'summary.csv')) == comparable([r if r['run'] in chosen else {**r, 'test_accuracy': ''} for r in rows])


def test_a_relative_data_dir_is_the_callers_and_its_runs_resume(tmp_path, real_data_available, monkeypatch):
    "Resolved against the folder the batch is started from, once, so a second call finds the same runs finished."
    from fashion_nb.datafiles import find_data
    mine = tmp_path/'mydata'
    mine.mkdir()
    for path in find_data(download=False).values(): (mine/path.name).symlink_to(path)
    monkeypatch.chdir(tmp_path)
    grid = {'data_dir': ['mydata'], 'seed': [0], **SMALL}
    first = run_batch(grid, 'out', workers=1, progress=False)
    assert [r['status'] for r in first] == ['done'] and first[0]['data_dir'] == str(mine)
    assert [r['status'] for r in run_batch(grid, 'out', workers=1, progress=False)] == ['skipped']


def test_rerun_skips_finished_runs_and_force_reruns(local_batch):
    grid, out, rows = local_batch
    started = time.perf_counter()
    again = run_batch(grid, out, workers=2, progress=False)
    assert [r['status'] for r in again] == ['skipped', 'skipped']
    assert time.perf_counter() - started < 30  # nothing ran: no kernel started, no training
    assert comparable(again) == comparable(rows)
    forced = run_batch({**grid, 'lr': [0.01]}, out, workers=1, force=True, progress=False)
    assert [r['status'] for r in forced] == ['done']
    before = next(r for r in rows if r['lr'] == 0.01)
    assert forced[0]['threads'] == usable_cpus() and before['threads'] == max(1, usable_cpus() // 2)
    assert abs(forced[0]['test_accuracy'] - before['test_accuracy']) <= 0.01  # same seed; other thread counts sum in other orders


@contextlib.contextmanager
def cluster(folder: Path, workers: int, options: list = ()):
    "A scheduler and workers started with the `dask` command as separate processes on 127.0.0.1, each in a folder of its own."
    pytest.importorskip('distributed')
    dask, started = Path(sys.executable).parent/'dask', []
    def start(arguments, where):
        where.mkdir(exist_ok=True)
        log = open(where/'process.log', 'wb')
        # a worker's scratch folders go in its folder too: one killed by a test leaves its run's there, not in the system's /tmp
        started.append(subprocess.Popen([dask, *arguments, *options], cwd=where, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, 'TMPDIR': str(where)}))
    scheduler_file = folder/'scheduler'/'scheduler.json'
    try:
        start(['scheduler', '--host', '127.0.0.1', '--port', '0', '--no-dashboard', '--scheduler-file', scheduler_file],
              folder/'scheduler')
        for i in range(1, workers + 1):
            start(['worker', '--scheduler-file', scheduler_file, '--host', '127.0.0.1', '--nthreads', '1', '--no-dashboard',
                   '--name', f'worker{i}', '--local-directory', folder/f'worker{i}'], folder/f'worker{i}')
        deadline, address = time.monotonic() + 60, None
        while address is None:  # the scheduler may have created its file and not yet written it
            assert time.monotonic() < deadline and all(p.poll() is None for p in started), 'the scheduler did not start'
            with contextlib.suppress(OSError, ValueError, KeyError): address = json.loads(scheduler_file.read_text())['address']
            if address is None: time.sleep(0.2)
        yield address
    finally:
        for process in started: process.terminate()
        for process in started:
            try: process.wait(timeout=30)
            except subprocess.TimeoutExpired: process.kill(); process.wait()


@pytest.fixture
def dask_cluster(tmp_path):
    distributed = pytest.importorskip('distributed')
    with cluster(tmp_path, 2) as address:
        with distributed.Client(address, timeout=60) as client: client.wait_for_workers(2, timeout=60)
        yield address


def test_batch_on_a_cluster_of_separate_processes(local_batch, dask_cluster, tmp_path):
    "Workers run in scratch folders of their own and send the files back; the summary equals the local pool's."
    grid, _, rows = local_batch
    out = tmp_path/'batch'
    dask_rows = run_batch(grid, out, scheduler=dask_cluster, progress=False)
    assert [r['status'] for r in dask_rows] == ['done', 'done']
    assert comparable(dask_rows) == comparable(rows)
    for r in dask_rows:
        assert Path(r['notebook']).parent == out.resolve()/r['run']
        assert {'end_to_end.ipynb', 'metrics.json', 'confusion_matrix.png', 'model.pt'} <= {p.name for p in (out/r['run']).iterdir()}
    assert sorted(p.name for p in out.iterdir()) == sorted([r['run'] for r in rows] + FILES)
    for worker in ('worker1', 'worker2'):  # the workers kept nothing of the runs in their own folders
        assert not list((tmp_path/worker).rglob('metrics.json'))


def test_failed_run_is_isolated_and_the_command_exits_nonzero(tmp_path, real_data_available):
    """`fashion-nb batch` as installed, with a YAML file and -p together; one run names a data folder that is not there,
    which only the run itself can find out (the table allows any folder's name)."""
    missing = tmp_path/'no-data'
    (tmp_path/'grid.yml').write_text(f'data_dir: ["", "{missing}"]\nlimit: 300\n')
    command = Path(sys.executable).parent/'fashion-nb'
    result = subprocess.run([command, 'batch', '-f', tmp_path/'grid.yml', '-p', 'seed', '3', '-p', 'val_size', '1000',
                             '--workers', '2', '--no-progress', '--out', tmp_path/'out'], capture_output=True, text=True)
    assert result.returncode == 1
    rows = {r['data_dir']: r for r in read_summary(tmp_path/'out'/'summary.csv')}
    assert rows['']['status'] == 'done' and rows['']['test_accuracy'] > 0.1
    failed = rows[str(missing)]
    assert failed['status'] == 'failed' and f"ParamError: data_dir {str(missing)!r} is not a readable folder" in failed['reason']
    assert Path(failed['notebook']).is_file()  # the executed notebook, with its error, is kept
    assert re.search(rf"run {re.escape(failed['run'])} failed: cell \d+ failed: ParamError", result.stderr)
    assert '1 of 2 runs finished' in result.stdout
    assert 'IPKernelApp' not in result.stderr and 'Traceback' not in result.stderr  # no kernel logging reaches the terminal


def test_timeout_stops_a_run_and_marks_it(tmp_path, real_data_available):
    # 50 epochs of 60,000 images: a minute at the least on any machine this runs on, stopped after 3 s whatever its speed
    rows = run_batch({'limit': [0], 'epochs': [50], 'val_size': [0]}, tmp_path, workers=1, timeout=3, progress=False)
    assert rows[0]['status'] == 'failed' and 'timeout of 3 s' in rows[0]['reason']


def test_sample_runs_exactly_n_and_without_validation_chooses_nothing(tmp_path, real_data_available, capsys):
    from fashion_nb.cli import main
    grid = {'lr': [0.001, 0.003, 0.01, 0.03], 'seed': [0, 1], 'limit': [300], 'epochs': [1], 'val_size': [0]}
    assert len(expand_grid(grid)) == 8
    rows = run_batch(grid, tmp_path, workers=2, sample=3, sample_seed=5, progress=False)
    assert len(rows) == 3 and [r['status'] for r in rows] == ['done'] * 3
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3
    assert 'no setting chosen' in (tmp_path/'report.md').read_text()
    assert not (tmp_path/'curves.png').exists() and (tmp_path/'summary.png').is_file()
    capsys.readouterr()
    # the same draw from the command line: every run is skipped, so this costs no training
    assert main(['batch', '-p', 'lr', '0.001,0.003,0.01,0.03', '-p', 'seed', '0,1', '-p', 'limit', '300', '-p', 'epochs', '1',
                 '-p', 'val_size', '0', '--sample', '3', '--sample-seed', '5', '--no-progress', '--out', str(tmp_path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith('3 of 3 runs finished (3 before this call)') and 'summary.png' in last and 'curves.png' not in last, last
    with pytest.raises(ParamError, match='add --sample N'):
        run_batch(parse_grid([('lr', 'log:1e-4:1e-1')]), tmp_path/'none', progress=False)
    with pytest.raises(ParamError, match="'epochs' is declared int, but the range log:1:10 draws float"):
        run_batch(parse_grid([('epochs', 'log:1:10')]), tmp_path/'none', sample=2, progress=False)


def test_a_changed_notebook_makes_finished_runs_stale(tmp_path, real_data_available):
    notebook = tmp_path/'end_to_end.ipynb'
    shutil.copy(project_root()/END_TO_END, notebook)
    grid = {'seed': [0], **SMALL}
    first = run_batch(grid, tmp_path/'out', workers=1, notebook=notebook, progress=False)
    assert [r['status'] for r in first] == ['done']
    assert [r['status'] for r in run_batch(grid, tmp_path/'out', workers=1, notebook=notebook, progress=False)] == ['skipped']
    nb = nbformat.read(notebook, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == 'code' and 'seed_everything(' in c.source)
    code.source += '\n# a change to the code'
    nbformat.write(nb, notebook)
    again = run_batch(grid, tmp_path/'out', workers=1, notebook=notebook, progress=False)
    assert [(r['status'], r['reason']) for r in again] == [('done', 'was stale: notebook changed')]
    summary = read_summary(tmp_path/'out'/'summary.csv')
    assert summary[0]['reason'] == 'was stale: notebook changed' and summary[0]['fingerprint'] != first[0]['fingerprint']


def test_a_killed_batch_resumes_and_leaves_no_temporary_files(tmp_path, real_data_available):
    "SIGKILL the whole batch once its first run has finished; the same command then finishes the rest."
    command = [Path(sys.executable).parent/'fashion-nb', 'batch', '-p', 'seed', '0,1', '-p', 'limit', '300', '-p', 'epochs', '1',
               '-p', 'val_size', '1000', '--workers', '1', '--no-progress', '--out', tmp_path/'out']
    batch = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any('fingerprint' in (finished_metrics(p.parent) or {}) for p in (tmp_path/'out').glob('*/metrics.json')):
            assert batch.poll() is None and time.monotonic() < deadline, 'the first run did not finish'
            time.sleep(0.2)
    finally:
        os.killpg(batch.pid, signal.SIGKILL)
        batch.wait()
    assert len(list((tmp_path/'out').glob('*/metrics.json'))) == 1
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = read_summary(tmp_path/'out'/'summary.csv')
    assert sorted(r['status'] for r in rows) == ['done', 'skipped']
    leftovers = [p.name for p in (tmp_path/'out').rglob('*') if p.name.startswith('.') or p.suffix in ('.tmp', '.partial')]
    assert leftovers == []


def openssl_certificates(folder: Path, name: str = 'fashion-nb') -> dict:
    "A certificate authority and one certificate signed by it, made with the batch page's own openssl recipe."
    folder.mkdir()
    for command in (f'req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN={name}-CA -keyout ca.key -out ca.pem',
                    f'req -newkey rsa:2048 -nodes -subj /CN={name} -keyout node.key -out node.csr',
                    'x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out node.pem'):
        subprocess.run(['openssl', *command.split()], cwd=folder, check=True, capture_output=True)
    return {'ca_file': folder/'ca.pem', 'cert': folder/'node.pem', 'key': folder/'node.key'}


@pytest.mark.skipif(shutil.which('openssl') is None, reason='openssl makes the test certificates; not on the PATH here')
def test_a_tls_cluster_refuses_clients_without_its_certificates_and_then_runs_the_batch(tmp_path, real_data_available, capsys):
    "Each refusal is one line and runs nothing; a batch with the right certificates then runs in the same process."
    dask = pytest.importorskip('dask')
    from fashion_nb.cluster import cluster_security
    from fashion_nb.cli import main
    own = openssl_certificates(tmp_path/'certificates')
    other = openssl_certificates(tmp_path/'other', 'intruder')  # a certificate from another authority
    options = ['--protocol', 'tls', '--tls-ca-file', own['ca_file'], '--tls-cert', own['cert'], '--tls-key', own['key']]
    with cluster(tmp_path, 1, options) as address, dask.config.set({'distributed.comm.timeouts.connect': '5s'}):
        assert address.startswith('tls://127.0.0.1:')
        plain = address.replace('tls://', 'tcp://')
        for scheduler, security in ((address, None), (address, cluster_security(**other)), (plain, None)):
            with pytest.raises(ClusterError, match=f"^cannot use the Dask scheduler at {re.escape(scheduler)} "):
                run_batch({'seed': [0], **SMALL}, tmp_path/'refused', scheduler=scheduler, security=security, progress=False)
        assert not any((tmp_path/'refused').iterdir())
        capsys.readouterr()
        assert main(['batch', '-p', 'seed', '0', '-p', 'limit', '1000', '--out', str(tmp_path/'refused'), '--scheduler', plain,
                     '--no-progress']) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"fashion-nb: cannot use the Dask scheduler at {plain} (") and err.count('\n') == 1, err
        rows = run_batch({'seed': [0, 1], **SMALL}, tmp_path/'out', scheduler=address, security=cluster_security(**own),
                         progress=False)
        assert [r['status'] for r in rows] == ['done', 'done']
        assert all((tmp_path/'out'/r['run']/'metrics.json').is_file() for r in rows)


def test_a_yaml_tag_that_builds_an_object_is_refused(tmp_path):
    "yaml.safe_load: the tag below would call a function with full yaml.load."
    marker = tmp_path/'ran'
    (tmp_path/'grid.yml').write_text(f'lr: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ["{marker}"]]\n')
    with pytest.raises(ParamError) as info:
        parse_grid(yaml_file=tmp_path/'grid.yml')
    assert str(info.value) == f"{tmp_path/'grid.yml'}: cannot read the parameter file (ConstructorError); check the path and its YAML"
    assert not marker.exists()


def test_a_kept_kernel_that_cannot_start_fails_only_its_run(tmp_path, monkeypatch):
    "The kernel's start is inside run_one's try: a failed row, and the next run starts a fresh kernel."
    import zmq
    from fashion_nb import worker
    started = []
    class Unstartable:
        def __init__(self, start_timeout): started.append(self); raise zmq.ZMQError(98, 'Address already in use')
    monkeypatch.setattr(worker, 'KeptKernel', Unstartable)
    monkeypatch.setattr(worker._kept, 'kernel', None, raising=False)
    row = worker.run_one({'seed': 0}, tmp_path, keep_kernel=True)
    assert row['status'] == 'failed' and row['reason'] == 'ZMQError: Address already in use' and row['run'] == 'seed=0'
    assert worker._kept.kernel is None
    class Fresh:
        def __init__(self, start_timeout): started.append(self)
        def alive(self): return True
        def take_log(self): return b''
        def shutdown(self): pass
    monkeypatch.setattr(worker, 'KeptKernel', Fresh)
    monkeypatch.setattr(worker, 'run_end_to_end', lambda *a, **k: {
        'test_accuracy': 0.8, 'train_accuracy': 0.8, 'history': [{'accuracy': 0.8}], 'seconds': {'total': 1.0}})
    assert worker.run_one({'seed': 0}, tmp_path, keep_kernel=True)['status'] == 'done'
    assert len(started) == 2 and isinstance(started[1], Fresh)


def test_a_batch_logs_each_runs_kernel_stderr_and_a_dead_kernel_fails_its_run_alone(tmp_path, traced):
    "One worker, three runs in its kept kernel, which writes to its stderr in each and is killed in the second: each run's "
    "kernel.log holds its own line, the killed run fails in one line, the others finish; nothing is left running or in the temporary folder."
    tmp, tag = traced
    notebook = short_notebook(tmp_path,
                              "import os\nfrom pathlib import Path\nfrom fashion_nb.core import write_json\n"
                              "os.write(2, f'the kernel of the run with seed {seed}\\n'.encode())",  # as C code writes to stderr
                              "if seed == 1: os.kill(os.getpid(), 9)",  # as the out-of-memory killer does
                              "write_json(Path(out_dir)/'metrics.json', {'test_accuracy': 0.5, 'train_accuracy': 0.5, "
                              "'history': [{'accuracy': 0.5}], 'seconds': {'total': 1.0}})")
    rows = {r['seed']: r for r in run_batch({'seed': [0, 1, 2]}, tmp_path/'out', workers=1, notebook=notebook, progress=False)}
    assert processes_tagged(tag) == set() and leftovers(tmp) == []  # the kernels, the worker: all gone when run_batch returns
    assert [rows[seed]['status'] for seed in (0, 1, 2)] == ['done', 'failed', 'done'], rows
    executed = (tmp_path/'out').resolve()/rows[1]['run']/'end_to_end.ipynb'
    # code cells: the parameters, papermill's injected ones, then the three above
    assert rows[1]['reason'] == f"the kernel died during the run, in code cell 4 of 5, perhaps out of memory (executed notebook: {executed})"
    for seed, row in rows.items():
        log = (tmp_path/'out'/row['run']/'kernel.log').read_text()
        assert [line for line in log.splitlines() if 'the kernel of the run' in line] == [f'the kernel of the run with seed {seed}'], log


def test_a_dead_kept_kernel_is_shut_down_before_the_next_starts(monkeypatch):
    "Its process reaped and its connection file removed; the one exit handler of the process shuts down the kernel that replaced it."
    from fashion_nb import worker
    monkeypatch.setattr(worker._kept, 'kernel', None, raising=False)
    monkeypatch.setattr(worker, '_kept_kernels', set())
    monkeypatch.setattr(worker, '_exit_handler', [])
    first = worker._kept_kernel()
    second = None
    try:
        assert first.evaluate('1 + 1') == '2'
        connection = Path(first.manager.connection_file)
        os.kill(first.manager.provisioner.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while first.alive(): assert time.monotonic() < deadline; time.sleep(0.1)
        assert connection.is_file() and first.manager.has_kernel  # dead, but not yet shut down
        second = worker._kept_kernel()
        assert second is not first and second.evaluate('2 + 2') == '4'
        assert not first.manager.has_kernel and not connection.exists()
        assert worker._kept_kernels == {second} and len(worker._exit_handler) == 1
        assert second.peak_memory() > 2**20  # a live Python process holds more than a MiB
        worker._exit_handler[0]()  # what the process's end runs
        assert not second.alive() and worker._kept_kernels == set()
    finally:
        for kernel in (first, second):
            if kernel is not None: kernel.shutdown()


@pytest.mark.parametrize('where', ['file', 'file/under'])
def test_out_that_cannot_be_a_folder_is_refused_in_one_line(tmp_path, where):
    (tmp_path/'file').write_text('not a folder')
    with pytest.raises(ParamError, match=r"^--out .* cannot be used as a folder \((it is a file|Not a directory)\)$"):
        run_batch({'seed': [0], **SMALL}, tmp_path/where, progress=False)


def test_duplicates_run_once_and_a_long_value_fails_only_its_run(tmp_path, real_data_available):
    """0.01 and 1e-2 are one run; a 260-character value makes a short folder name, and its run fails on its own (a data
    folder that is not there: the table allows any folder's name, and only the run finds out)."""
    rows = run_batch({'lr': [0.01, 1e-2], 'data_dir': ['', '/no/such/' + 'x' * 251], **SMALL}, tmp_path, workers=2, progress=False)
    assert len(rows) == 2 and sorted(r['status'] for r in rows) == ['done', 'failed']
    failed = next(r for r in rows if r['status'] == 'failed')
    assert len(failed['run']) <= 120 and '\n' not in failed['reason'] and (tmp_path/failed['run']).is_dir()
    assert len(read_summary(tmp_path/'summary.csv')) == 2 and (tmp_path/'report.md').is_file()


SIX_RUNS = ['-p', 'seed', '0,1,2,3,4,5', '-p', 'limit', '3000', '-p', 'epochs', '1', '-p', 'val_size', '100']  # a few seconds each


def interrupted_batch(arguments: list, out: Path, terminate: bool = False) -> str:
    """Start `fashion-nb batch`, send SIGINT to its process group (as Ctrl-C in a terminal) once a run has finished; its stderr.
    With `terminate`, SIGTERM to the batch's own process instead (as `kill PID`, or a job scheduler's time limit)."""
    command = [Path(sys.executable).parent/'fashion-nb', 'batch', *SIX_RUNS, *arguments, '--no-progress', '--out', out]
    # a job started in the background without job control inherits SIGINT ignored, and Python then keeps ignoring it
    batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob('*/metrics.json')):
            assert batch.poll() is None and time.monotonic() < deadline, 'the first run did not finish'
            time.sleep(0.1)
        time.sleep(0.5)  # the batch collects the row; the next run starts
        if terminate: os.kill(batch.pid, signal.SIGTERM)
        else: os.killpg(batch.pid, signal.SIGINT)
        _, err = batch.communicate(timeout=60)
    finally:
        if batch.poll() is None: os.killpg(batch.pid, signal.SIGKILL); batch.wait()
    assert batch.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith('fashion-nb: interrupted: '), err
    return err


def summary_keeps_what_finished(out: Path):
    rows = read_summary(out/'summary.csv')
    finished_runs = sorted(p.parent.name for p in out.glob('*/metrics.json'))
    assert sorted(r['run'] for r in rows if r['status'] == 'done') == finished_runs and 1 <= len(finished_runs) < 6


def test_ctrl_c_stops_the_batch_and_keeps_what_finished(tmp_path, real_data_available):
    "Ctrl-C once the first of six runs has finished: the running one stops, no other starts."
    interrupted_batch(['--workers', '1'], tmp_path/'out')
    folders = [p for p in (tmp_path/'out').iterdir() if p.is_dir()]
    time.sleep(3)  # no worker goes on to start another run
    assert len([p for p in (tmp_path/'out').iterdir() if p.is_dir()]) == len(folders) <= 2
    summary_keeps_what_finished(tmp_path/'out')


def test_sigterm_stops_the_batch_and_its_workers(tmp_path, real_data_available):
    "`kill PID` of the batch alone: its worker and the running kernel stop too, no run starts after, the summary is written."
    out = tmp_path/'out'
    interrupted_batch(['--workers', '1'], out, terminate=True)
    folders = [p for p in out.iterdir() if p.is_dir()]
    time.sleep(3)  # a worker left behind would start the next run here
    assert len([p for p in out.iterdir() if p.is_dir()]) == len(folders) <= 2
    summary_keeps_what_finished(out)


def test_a_worker_lost_midway_fails_only_its_run_on_a_cluster(tmp_path, real_data_available, monkeypatch):
    "A Dask worker killed while it runs a run: that run becomes a failed row, the other finishes, the summary holds both."
    distributed = pytest.importorskip('distributed')
    monkeypatch.setenv('DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES', '0')  # the scheduler gives up at once, not after 3 retries
    with cluster(tmp_path, 2) as address, distributed.Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        pids = client.run(os.getpid)  # worker address -> its process (the nanny above it starts another)
        killed = []
        def kill_a_busy_worker():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                busy = [address for address, keys in client.processing().items() if keys]
                if len(busy) == 2:  # both runs have started; give one time to be well inside its notebook
                    time.sleep(3)
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(busy[0])
                    return
                time.sleep(0.2)
        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        grid = {'seed': [0, 1], 'limit': [6000], 'epochs': [2], 'val_size': [1000]}  # runs of several seconds
        rows = run_batch(grid, tmp_path/'out', scheduler=client, progress=False)
        killer.join()
    assert killed, 'no worker was busy to kill'
    assert sorted(r['status'] for r in rows) == ['done', 'failed'], rows
    failed = next(r for r in rows if r['status'] == 'failed')
    assert failed['reason'].startswith('KilledWorker') and '\n' not in failed['reason'], failed['reason']
    assert not (tmp_path/'out'/failed['run']/'metrics.json').exists()
    assert sorted((r['run'], r['status']) for r in read_summary(tmp_path/'out'/'summary.csv')) == sorted((r['run'], r['status']) for r in rows)


def test_ctrl_c_stops_a_batch_on_a_cluster_and_keeps_what_finished(tmp_path, real_data_available):
    "Ctrl-C to `fashion-nb batch --scheduler` once a run has finished: nothing is left queued on the cluster."
    distributed = pytest.importorskip('distributed')
    with cluster(tmp_path, 1) as address:
        interrupted_batch(['--scheduler', address], tmp_path/'out')
        with distributed.Client(address, timeout=60) as client:
            deadline = time.monotonic() + 120  # a run the worker had started goes on there until it ends; nothing after it
            while any(client.processing().values()) and time.monotonic() < deadline: time.sleep(0.5)
            assert not any(client.processing().values()) and client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0
    summary_keeps_what_finished(tmp_path/'out')


def settings_rows(results: dict) -> list[dict]:
    "Summary rows made up from {(lr, batch_size): ([validation by seed], [test by seed])}."
    return [{'run': f'r{i}{seed}', 'lr': lr, 'batch_size': bs, 'seed': seed, 'status': 'done',
             'val_accuracy': val[seed], 'test_accuracy': test[seed]}
            for i, ((lr, bs), (val, test)) in enumerate(results.items()) for seed in range(len(val))]


def test_two_parameters_varying_choose_the_runs_with_both_values():
    "A setting's runs are those with every one of its values: with `any`, the runs sharing one value would dilute its test accuracy."
    rows = settings_rows({(0.01, 64): ([0.90, 0.91], [0.88, 0.90]), (0.01, 32): ([0.80, 0.82], [0.70, 0.70]),
                          (0.001, 64): ([0.78, 0.80], [0.69, 0.69]), (0.001, 32): ([0.60, 0.62], [0.60, 0.60])})
    table = compare_settings(rows)
    assert [(s['setting'], s['runs']) for s in table] == [('batch_size=64, lr=0.01', 2), ('batch_size=32, lr=0.01', 2),
                                                          ('batch_size=64, lr=0.001', 2), ('batch_size=32, lr=0.001', 2)]
    assert choose(table, rows)['test_mean'] == pytest.approx(0.89)  # not 0.76, the mean of every run sharing a value with it
    assert report(table, rows) == [
        '8 of 8 runs finished; 4 settings compared on validation accuracy',
        'chosen: batch_size=64, lr=0.01, validation accuracy 0.9050 ± 0.0071 over 2 runs',
        'ahead of the next (batch_size=32, lr=0.01) by 0.0950, 6.7 times the spread between seeds',
        'final estimate, the test split read once for the chosen setting: 0.8900']


@pytest.mark.parametrize('val, second_line', [
    ({0.01: [0.81, 0.81], 0.001: [0.72, 0.72]},
     'ahead of the next (batch_size=64, lr=0.001) by 0.0900, with a spread of 0 between seeds (they agreed exactly): chance not measured'),
    ({0.01: [0.81], 0.001: [0.72]}, 'ahead of the next (batch_size=64, lr=0.001) by 0.0900, with no second seed to measure chance by'),
    ({0.01: [0.80, 0.82], 0.001: [0.72, 0.72]}, 'ahead of the next (batch_size=64, lr=0.001) by 0.0900, 6.4 times the spread between seeds'),
])
def test_the_report_tells_a_spread_of_zero_from_no_second_seed(val, second_line):
    rows = settings_rows({(lr, 64): (v, [0.7] * len(v)) for lr, v in val.items()})
    rows += [{**r, 'batch_size': 32, 'run': r['run'] + 'b', 'val_accuracy': 0.5} for r in rows]  # a second parameter varies
    lines = report(compare_settings(rows), rows)
    assert lines[2] == second_line and lines[3] == 'final estimate, the test split read once for the chosen setting: 0.7000', lines
