"The end-to-end notebook under papermill: a small real run, bad parameters, and the `fashion-nb run` command."
import ast
import errno
import json
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import papermill
import pytest
import zmq
from papermill.exceptions import PapermillExecutionError

import fashion_nb
from fashion_nb.core import project_root
from fashion_nb.cli import main
from fashion_nb.run import END_TO_END, RunError, run_end_to_end, run_fingerprint, stale_reason
from fashion_nb.training import load_checkpoint

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
    assert width > 1000 and height > 500, (width, height)


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
    ('lr', -0.1, 'lr must be a positive number'),
    ('device', 'tpu', "unknown device 'tpu'"),
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
    assert main(['run', *args, '--out', str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and message in err, err
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
    "papermill.execute_notebook as run_end_to_end finds it, counting its calls; `failing` makes the first calls fail to start."
    real, calls, waits = papermill.execute_notebook, [], []
    def counted(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) <= counted.failing: raise zmq.error.ZMQError(errno.EADDRINUSE)  # before anything was written
        return real(*args, **{**kwargs, 'kernel_name': counted.kernel or kwargs['kernel_name']})
    counted.failing, counted.kernel, counted.calls, counted.waits = 0, None, calls, waits
    monkeypatch.setattr(papermill, 'execute_notebook', counted)
    real_sleep, this_thread = time.sleep, threading.current_thread()
    def backoff(seconds):  # the retries' waits are recorded, not slept; short polls and other threads' sleeps still happen
        if seconds >= 1 and threading.current_thread() is this_thread: waits.append(seconds)
        else: real_sleep(seconds)
    monkeypatch.setattr(time, 'sleep', backoff)
    return counted


def test_a_failed_kernel_start_is_retried(tmp_path, execute_calls, real_data_available):
    (tmp_path/'metrics.json').write_text('{"test_accuracy": 0.99}')  # an earlier run's
    (tmp_path/'.end_to_end.partial.ipynb').write_text('{')  # of a run killed while writing
    execute_calls.failing = 1
    metrics = run_end_to_end(tmp_path, TINY_RUN, progress=False, start_timeout=30)
    assert metrics['start_attempts'] == 2 and len(execute_calls.calls) == 2 and execute_calls.waits == [1]
    assert execute_calls.calls[-1]['start_timeout'] == 30
    assert metrics['fingerprint'] == run_fingerprint(TINY_RUN) and metrics['train_images'] == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ['confusion_matrix.png', 'end_to_end.ipynb', 'metrics.json', 'model.pt']


def test_a_kernel_that_never_starts_gives_up_with_one_line(tmp_path, execute_calls):
    (tmp_path/'metrics.json').write_text('{"test_accuracy": 0.99}')
    execute_calls.failing = 99
    with pytest.raises(RunError) as info:
        run_end_to_end(tmp_path, TINY_RUN, progress=False)
    assert str(info.value) == 'kernel did not start after 3 attempts: ZMQError: Address already in use'
    assert len(execute_calls.calls) == 3 and execute_calls.waits == [1, 2]
    assert list(tmp_path.iterdir()) == []  # the old metrics.json is gone: the folder does not look finished


def test_a_start_failure_is_told_from_what_papermill_writes(tmp_path, execute_calls):
    "Real papermill failing to start a kernel (there is none of that name) is a start failure: retried, then one line."
    execute_calls.kernel = 'no-such-kernel'
    with pytest.raises(RunError) as info:
        run_end_to_end(tmp_path, TINY_RUN, progress=False, start_attempts=2)
    assert str(info.value) == 'kernel did not start after 2 attempts: NoSuchKernel: No such kernel named no-such-kernel'
    assert len(execute_calls.calls) == 2 and execute_calls.waits == [1]
    assert not (tmp_path/'metrics.json').exists() and not list(tmp_path.glob('.*'))  # nothing looks finished, nothing half-written
    if (tmp_path/'end_to_end.ipynb').exists():  # papermill saves only at the start and the end now: if it saved, nothing ran
        executed = nbformat.read(tmp_path/'end_to_end.ipynb', as_version=4)
        assert all(c.execution_count is None for c in executed.cells if c.cell_type == 'code')


def test_a_failed_cell_is_not_retried(tmp_path, execute_calls):
    (tmp_path/'metrics.json').write_text('{"test_accuracy": 0.99}')
    with pytest.raises(RunError, match=r'cell \d+ failed: ParamError: epochs must be at least 1'):
        run_end_to_end(tmp_path, {**TINY_RUN, 'epochs': 0}, progress=False)
    assert len(execute_calls.calls) == 1 and execute_calls.waits == []
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
    from fashion_nb.run import WarmKernel
    common = {'epochs': 1, 'limit': 1000, 'threads': 1, 'quiet': True}
    kernel = WarmKernel()
    try:
        assert kernel.evaluate("[name for name in ('torch', 'sklearn', 'gc') if name in globals()]") == '[]'  # imported, not named
        first = run_end_to_end(tmp_path/'first', {**common, 'seed': 1, 'lr': 0.03, 'deterministic': True}, progress=False, kernel=kernel)
        assert kernel.evaluate("'history' in globals()") == 'True'  # the first run's names, until the next reset
        kernel.reset()
        assert kernel.evaluate("'history' in globals()") == 'False'
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
