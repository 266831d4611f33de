"The end-to-end notebook under papermill: a small real run, bad parameters, kernels that die, what a run leaves behind, and `fashion-nb run`."
import ast
import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from multiprocessing import resource_tracker
from pathlib import Path

import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

import fashion_nb
from fashion_nb.core import project_root
from fashion_nb.cli import main
from fashion_nb.fingerprint import run_fingerprint, stale_reason
from fashion_nb.params import END_TO_END
from fashion_nb.run import RunError, run_end_to_end
from fashion_nb.checkpoint import load_checkpoint

NOTEBOOK = project_root()/END_TO_END
SMALL_RUN = {'epochs': 1, 'limit': 2000, 'seed': 1, 'device': 'cpu', 'quiet': True}
TINY_RUN = {'epochs': 1, 'limit': 300, 'device': 'cpu', 'quiet': True}


@pytest.fixture(scope='module')
def small_run(tmp_path_factory, real_data_available):
    out = tmp_path_factory.mktemp('run')
    metrics = run_end_to_end(out, SMALL_RUN, progress=False)
    return out, metrics


def test_run_writes_every_result(small_run):
    out, metrics = small_run
    assert sorted(p.name for p in out.iterdir()) == ['confusion_matrix.png', 'end_to_end.ipynb', 'metrics.json', 'model.pt']
    assert metrics == json.loads((out/'metrics.json').read_text())


def test_metrics_record_the_run(small_run):
    out, metrics = small_run
    assert metrics['params']['epochs'] == 1 and metrics['params']['limit'] == 2000 and metrics['params']['seed'] == 1
    assert metrics['params']['out_dir'] == str(out)
    assert metrics['train_images'] == 2000 and metrics['test_images'] == 10000
    assert len(metrics['history']) == 1
    epoch = metrics['history'][0]
    assert epoch['epoch'] == 1 and epoch['correct'] == round(epoch['accuracy'] * 2000)
    # one epoch on 2,000 images is well above chance (0.1) but far from the full run
    assert 0.3 < metrics['test_accuracy'] < 0.95, metrics['test_accuracy']
    cm = metrics['confusion_matrix']
    assert [sum(row) for row in cm] == [1000] * 10
    assert sum(cm[i][i] for i in range(10)) == round(metrics['test_accuracy'] * 10000)
    assert metrics['seconds']['total'] > metrics['seconds']['train'] > 0
    assert metrics['versions']['torch']


def test_confusion_png_is_a_real_image(small_run):
    out, _ = small_run
    head = (out/'confusion_matrix.png').read_bytes()[:24]
    assert head[:8] == b'\x89PNG\r\n\x1a\n'
    width, height = struct.unpack('>II', head[16:24])
    assert width > 500 and height > 1000, (width, height)  # two matrices, one per row


def test_checkpoint_and_executed_notebook(small_run):
    out, metrics = small_run
    model, checkpoint = load_checkpoint(out/'model.pt')
    assert checkpoint['metrics']['test_accuracy'] == metrics['test_accuracy']
    executed = nbformat.read(out/'end_to_end.ipynb', as_version=4)
    injected = [c for c in executed.cells if 'injected-parameters' in c.metadata.get('tags', [])]
    assert len(injected) == 1 and 'limit = 2000' in injected[0].source
    errors = [o for c in executed.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert errors == []


@pytest.mark.parametrize('name, value, message', [
    ('epochs', 0, 'epochs must be at least 1, got 0'),
    ('lr', -0.1, 'lr must be positive, got -0.1'),
    ('device', 'tpu', "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'"),
    ('data_dir', '/no/such/folder', "data_dir '/no/such/folder' is not a readable folder"),
])
def test_bad_parameter_fails_in_the_first_cell_with_one_line(tmp_path, name, value, message):
    with pytest.raises(PapermillExecutionError) as info:
        papermill.execute_notebook(str(NOTEBOOK), str(tmp_path/'out.ipynb'), parameters={name: value},
                                   kernel_name='python3', progress_bar=False, cwd=str(project_root()))
    error = info.value
    assert error.ename == 'ParamError' and message in error.evalue and '\n' not in error.evalue
    executed = nbformat.read(tmp_path/'out.ipynb', as_version=4)
    code = [c for c in executed.cells if c.cell_type == 'code']
    at = next(i for i, c in enumerate(code) if 'parameters' in c.metadata.get('tags', []))
    assert 'injected-parameters' in code[at + 1].metadata.tags
    failed = [c for c in code if any(o.output_type == 'error' for o in c.get('outputs', []))]
    assert failed == [code[at + 2]]  # the first cell after the parameters
    assert failed[0].outputs[-1].traceback == [f'ParamError: {error.evalue}']


def test_command_refuses_unknown_parameter_before_running(tmp_path, capsys):
    assert main(['run', '-p', 'learning_rate', '0.1', '--out', str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and "unknown parameter 'learning_rate'" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('args, message', [
    (['--timeout', '0'], 'timeout must be at least 1, got 0'),
    (['--timeout', '-5'], 'timeout must be at least 1, got -5'),
    (['--start-timeout', '0'], 'start_timeout must be at least 1, got 0'),
])
def test_command_refuses_a_timeout_below_one_second(tmp_path, capsys, args, message):
    "nbclient would read 0 or less as no limit at all."
    for command in ('run', 'batch'):  # a batch refuses it before any kernel starts, not run by run
        assert main([command, *args, '--out', str(tmp_path/command)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count('\n') == 0 and message in err, (command, err)
    assert list(tmp_path.iterdir()) == []


def test_command_refuses_an_out_folder_under_a_file(tmp_path, capsys):
    (tmp_path/'afile').write_text('')
    for out in (tmp_path/'afile', tmp_path/'afile'/'sub'):
        assert main(['run', '-p', 'limit', '100', '--out', str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count('\n') == 0 and f"out_dir {str(out)!r} cannot be created (" in err, err


def test_a_relative_data_dir_is_the_callers(tmp_path, monkeypatch):
    "The kernel starts in the checkout, which has a data/ folder: a relative data_dir must still mean the caller's folder."
    assert (project_root()/'data').is_dir()  # else the test would pass without the fix
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunError) as info:
        run_end_to_end(tmp_path/'out', {**TINY_RUN, 'data_dir': 'data'}, progress=False)
    message = str(info.value)
    assert '\n' not in message and f"ParamError: data_dir {str(tmp_path/'data')!r} is not a readable folder" in message, message


def test_command_reports_a_failed_cell(tmp_path):
    command = Path(sys.executable).parent/'fashion-nb'  # the console script pyproject.toml declares
    result = subprocess.run([command, 'run', '-p', 'epochs', '0', '--no-progress',
                             '--out', str(tmp_path)], capture_output=True, text=True, cwd=project_root())
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r'fashion-nb: cell \d+ failed: ParamError: epochs must be at least 1', last), result.stderr
    assert str(tmp_path/'end_to_end.ipynb') in last


def test_fingerprint_holds_the_full_parameters():
    fingerprint = run_fingerprint({})
    assert fingerprint['params']['epochs'] == 1 and fingerprint['params']['lr'] == 0.01 and fingerprint['params']['device'] == 'auto'
    assert 'out_dir' not in fingerprint['params'] and 'quiet' not in fingerprint['params']
    assert list(fingerprint['params']) == sorted(fingerprint['params'])
    assert run_fingerprint({}) == fingerprint == run_fingerprint({'epochs': 1, 'out_dir': 'elsewhere', 'quiet': True})
    assert run_fingerprint({'epochs': 2})['params'] == {**fingerprint['params'], 'epochs': 2}
    assert len(fingerprint['notebook']) == len(fingerprint['package']) == 64


def test_stale_reason_names_what_changed(tmp_path, monkeypatch):
    fingerprint = run_fingerprint({}, NOTEBOOK)
    assert stale_reason(None, fingerprint) == 'no fingerprint'
    assert stale_reason(fingerprint, fingerprint) is None
    assert stale_reason(json.loads(json.dumps(fingerprint)), fingerprint) is None  # as metrics.json gives it back
    assert stale_reason({**fingerprint, 'commit': 'another commit'}, fingerprint) is None
    assert stale_reason(run_fingerprint({'lr': 0.1}, NOTEBOOK), fingerprint) == 'parameters changed'
    edited = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in edited.cells if c.cell_type == 'code']
    code[-1].source += '\nprint("one more line")'
    nbformat.write(edited, tmp_path/'edited.ipynb')
    assert stale_reason(run_fingerprint({}, tmp_path/'edited.ipynb'), fingerprint) == 'notebook changed'
    package = shutil.copytree(Path(fashion_nb.__file__).parent, tmp_path/'fashion_nb', ignore=shutil.ignore_patterns('__pycache__'))
    monkeypatch.setattr(fashion_nb, '__file__', str(package/'__init__.py'))
    assert stale_reason(run_fingerprint({}, NOTEBOOK), fingerprint) is None  # the same source elsewhere
    (package/'run.py').write_text((package/'run.py').read_text() + '\n# an edit\n')
    assert stale_reason(run_fingerprint({}, NOTEBOOK), fingerprint) == 'package changed'


def test_run_records_its_fingerprint(small_run):
    out, metrics = small_run
    assert metrics['fingerprint'] == run_fingerprint(SMALL_RUN)
    assert stale_reason(metrics['fingerprint'], run_fingerprint(SMALL_RUN)) is None
    assert metrics['start_attempts'] == 1
    assert not list(out.glob('.*'))  # no partial notebook, no temporary file left


@pytest.fixture
def execute_calls(monkeypatch):
    "papermill.execute_notebook as run_end_to_end finds it, counting its calls; `kernel` names another kernel to start."
    real, calls = papermill.execute_notebook, []
    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **{**kwargs, 'kernel_name': counted.kernel or kwargs['kernel_name']})
    counted.kernel, counted.calls = None, calls
    monkeypatch.setattr(papermill, 'execute_notebook', counted)
    return counted


# How a failed start is retried, and with what waits, is checked beside the code, on the runs page (nbs/12_run.ipynb);
# these tests run real papermill and real kernels.

def test_real_papermill_failing_to_start_a_kernel_is_a_start_failure(tmp_path, execute_calls):
    "There is no kernel of that name: papermill fails before any kernel answers, so it is retried, then said in one line."
    execute_calls.kernel = 'no-such-kernel'
    with pytest.raises(RunError) as info:
        run_end_to_end(tmp_path, TINY_RUN, progress=False, start_attempts=2)
    assert str(info.value) == 'kernel did not start after 2 attempts: NoSuchKernel: No such kernel named no-such-kernel'
    assert len(execute_calls.calls) == 2
    assert list(tmp_path.iterdir()) == []  # nothing looks finished, nothing half-written


def short_notebook(folder: Path, *sources: str) -> Path:
    "The end-to-end notebook's parameters cell, then these code cells: a notebook that runs as the real one is run, in seconds."
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells = [next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])), *map(nbformat.v4.new_code_cell, sources)]
    nbformat.write(nb, folder/'short.ipynb')
    return folder/'short.ipynb'


def test_a_kernel_killed_after_its_first_cell_is_not_started_again(tmp_path, execute_calls):
    "The kernel answered, ran a cell, then died: one line that says so, and the notebook as far as it ran."
    notebook = short_notebook(tmp_path, "print('the first cell ran')", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
                              "print('never')")
    with pytest.raises(RunError) as info:
        run_end_to_end(tmp_path/'out', {'seed': 3}, notebook=notebook, progress=False)
    executed = tmp_path/'out'/'end_to_end.ipynb'
    # code cells: the parameters, papermill's injected ones, then the three above
    assert str(info.value) == f"the kernel died during the run, in code cell 4 of 5, perhaps out of memory (executed notebook: {executed})"
    assert len(execute_calls.calls) == 1
    code = [c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == 'code']
    assert 'seed = 3' in code[1].source and code[2].outputs[0].text == 'the first cell ran\n'
    assert code[3].outputs[-1].ename == 'DeadKernelError' and code[4].execution_count is None and code[4].outputs == []
    assert sorted(p.name for p in (tmp_path/'out').iterdir()) == ['end_to_end.ipynb']


def kernels_of(pid: int) -> set[int]:
    "The kernels that the process `pid` started: its children running ipykernel."
    found = set()
    for stat in Path('/proc').glob('[0-9]*/stat'):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int(stat.read_text().rsplit(')', 1)[1].split()[1])
            if parent == pid and b'ipykernel' in (stat.parent/'cmdline').read_bytes(): found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path('/proc/self/stat').is_file(), reason='finds the kernel through /proc')
def test_a_kernel_killed_during_training_stops_the_command_with_one_line(tmp_path, real_data_available):
    "SIGKILL to the kernel of `fashion-nb run` once `fit` runs, as the out-of-memory killer sends it: one line, status 1, no second start."
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    loaded = 2 + next(i for i, c in enumerate(cells) if c.cell_type == 'code' and 'load_split(' in c.source)  # with papermill's cell
    command = [Path(sys.executable).parent/'fashion-nb', 'run', '-p', 'epochs', '500', '-p', 'limit', '0', '-p', 'device', 'cpu',
               '-p', 'quiet', 'True', '--out', str(tmp_path/'out')]  # 500 passes over 60,000 images: many minutes of training
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=project_root())
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: os.read(run.stderr.fileno(), 4096), b'')))
    reader.start()
    seen, killed = set(), None
    try:
        deadline = time.monotonic() + 240
        # papermill's bar counts the cells done (a slow one always shows): once the data is loaded, `fit` is a second away
        while max(map(int, re.findall(rf'(\d+)/{len(cells) + 1} \[', b''.join(err).decode(errors='replace'))), default=0) < loaded:
            assert run.poll() is None and time.monotonic() < deadline, b''.join(err).decode(errors='replace')
            seen |= kernels_of(run.pid)
            time.sleep(0.1)
        time.sleep(5)  # `fit` runs; the executed notebook says below whether it did
        seen |= kernels_of(run.pid)
        assert len(seen) == 1, seen
        killed = seen.pop()
        os.kill(killed, signal.SIGKILL)
        while run.poll() is None and time.monotonic() < deadline:
            seen |= kernels_of(run.pid) - {killed}
            time.sleep(0.1)
    finally:
        if run.poll() is None: run.kill()
        run.wait()
        reader.join()
    stderr = b''.join(err).decode(errors='replace')
    executed = tmp_path/'out'/'end_to_end.ipynb'
    assert run.returncode == 1 and seen == set(), (run.returncode, seen)  # no other kernel: the run was not started again
    code_cells = sum(c.cell_type == 'code' and bool(c.source.strip()) for c in cells) + 1
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"fashion-nb: the kernel died during the run, in code cell \d+ of {code_cells}, perhaps out of memory "
                        rf"\(executed notebook: {re.escape(str(executed))}\)", last), stderr
    assert 'Traceback' not in stderr and 'Kernel died' not in stderr, stderr
    stopped = [c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == 'code' and c.outputs
               and c.outputs[-1].output_type == 'error']
    assert len(stopped) == 1 and 'history = fit(' in stopped[0].source and stopped[0].outputs[-1].ename == 'DeadKernelError'
    assert not (tmp_path/'out'/'metrics.json').exists()


def processes_tagged(tag: str) -> set[int]:
    "The processes that have `tag` in their environment: those started from a test that set it, and theirs, even once orphaned."
    found = set()
    for environ in Path('/proc').glob('[0-9]*/environ'):
        with contextlib.suppress(OSError):
            if tag.encode() in environ.read_bytes(): found.add(int(environ.parent.name))
    return found


@pytest.fixture
def traced(tmp_path, monkeypatch):
    "A temporary directory of the test's own, for this process and those it starts; and a variable that tags those processes."
    if not Path('/proc/self/environ').is_file(): pytest.skip('finds the processes through /proc')
    tmp, tag = tmp_path/'tmp', f'FASHION_NB_TEST_{uuid.uuid4().hex}'
    tmp.mkdir()
    resource_tracker.ensure_running()  # multiprocessing's helper of this process, started once for all its pools: not a run's
    monkeypatch.setenv('TMPDIR', str(tmp))
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp))
    monkeypatch.setenv(tag, '1')
    return tmp, tag


def leftovers(tmp: Path) -> list[str]:
    "What is in the temporary directory, but torch's cache (torchinductor_USER): one of a fixed name, that every run shares."
    return sorted(p.name for p in tmp.iterdir() if not p.name.startswith('torchinductor_'))


def test_a_run_leaves_no_process_and_no_temporary_folder(tmp_path, traced, real_data_available):
    "The notebook as it stands (out_dir '', as nbdev-test runs it) writes to a temporary folder, gone with its kernel; a run leaves nothing."
    tmp, tag = traced
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path/'as_it_stands.ipynb'), parameters={**TINY_RUN, 'out_dir': ''},
                               kernel_name='python3', progress_bar=False, cwd=str(project_root()))
    printed = ''.join(o.get('text', '') for c in nbformat.read(tmp_path/'as_it_stands.ipynb', as_version=4).cells
                      for o in c.get('outputs', []))
    assert f"results in {tmp.resolve()}/fashion_nb-" in printed, printed  # where its files went
    assert processes_tagged(tag) == set() and leftovers(tmp) == []
    run_end_to_end(tmp_path/'run', TINY_RUN, progress=False)
    assert processes_tagged(tag) == set() and leftovers(tmp) == []


def test_a_failed_cell_is_not_retried(tmp_path, execute_calls):
    (tmp_path/'metrics.json').write_text('{"test_accuracy": 0.99}')
    with pytest.raises(RunError, match=r'cell \d+ failed: ParamError: epochs must be at least 1'):
        run_end_to_end(tmp_path, {**TINY_RUN, 'epochs': 0}, progress=False)
    assert len(execute_calls.calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['end_to_end.ipynb']  # the executed notebook, with the error


def test_a_string_parameter_reaches_the_notebook_as_a_literal(tmp_path):
    "papermill writes parameters as Python literals: code inside a string value is never run."
    marker = tmp_path/'ran'
    hostile = f"\"); import pathlib; pathlib.Path({str(marker)!r}).touch(); (\""
    with pytest.raises(PapermillExecutionError) as info:
        papermill.execute_notebook(str(NOTEBOOK), str(tmp_path/'out.ipynb'), parameters={'data_dir': hostile},
                                   kernel_name='python3', progress_bar=False, cwd=str(project_root()))
    assert info.value.ename == 'ParamError' and 'is not a readable folder' in info.value.evalue
    assert not marker.exists()
    injected = next(c for c in nbformat.read(tmp_path/'out.ipynb', as_version=4).cells
                    if 'injected-parameters' in c.metadata.get('tags', []))
    assigned = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(injected.source).body}
    assert assigned['data_dir'] == hostile  # one string literal, the value as given


def test_a_kept_kernel_gives_each_run_a_fresh_state(tmp_path, real_data_available):
    "Batch workers reuse one kernel: a run after another in it gives what it gives in a new kernel, number for number."
    from fashion_nb.worker import KeptKernel
    common = {'epochs': 1, 'limit': 1000, 'threads': 1, 'quiet': True}
    kernel = KeptKernel()
    try:
        assert kernel.evaluate("[name for name in ('torch', 'sklearn', 'gc') if name in globals()]") == '[]'  # imported, not named
        first = run_end_to_end(tmp_path/'first', {**common, 'seed': 1, 'lr': 0.03, 'deterministic': True}, progress=False, kernel=kernel)
        assert kernel.evaluate("'history' in globals()") == 'True'  # the first run's names, until the next reset
        figures = "__import__('matplotlib.pyplot').pyplot.get_fignums()"
        kernel._execute("import matplotlib.pyplot as plt\nwith plt.ioff(): plt.figure()")  # one that outlives its cell, as none is shown
        assert kernel.evaluate(figures) != '[]'
        kernel.reset()
        assert kernel.evaluate("'history' in globals()") == 'False'
        assert kernel.evaluate(figures) == '[]'
        assert kernel.evaluate("__import__('torch').are_deterministic_algorithms_enabled()") == 'False'
        assert kernel.evaluate("__import__('torch').get_num_threads()") == str(kernel.threads)
        second = run_end_to_end(tmp_path/'second', {**common, 'seed': 2}, progress=False, kernel=kernel)
    finally:
        kernel.shutdown()
    alone = run_end_to_end(tmp_path/'alone', {**common, 'seed': 2}, progress=False)
    assert (first['kernel_runs'], second['kernel_runs'], alone['kernel_runs']) == (1, 2, 1)
    def results(m): return {**{k: m[k] for k in ('train_accuracy', 'test_accuracy', 'confusion_matrix', 'threads')},
                            'history': [{k: v for k, v in h.items() if k != 'seconds'} for h in m['history']]}
    assert results(second) == results(alone)
