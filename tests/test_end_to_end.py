"The end-to-end notebook under papermill: a small real run, bad parameters, and the `fashion-nb run` command."
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from fashion_nb.core import project_root
from fashion_nb.cli import main
from fashion_nb.run import END_TO_END, run_end_to_end
from fashion_nb.training import load_checkpoint

NOTEBOOK = project_root()/END_TO_END


@pytest.fixture(scope='module')
def small_run(tmp_path_factory, real_data_available):
    out = tmp_path_factory.mktemp('run')
    metrics = run_end_to_end(out, {'epochs': 1, 'limit': 2000, 'seed': 1, 'device': 'cpu', 'quiet': True}, progress=False)
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


def test_command_reports_a_failed_cell(tmp_path):
    command = Path(sys.executable).parent/'fashion-nb'  # the console script pyproject.toml declares
    result = subprocess.run([command, 'run', '-p', 'epochs', '0', '--no-progress',
                             '--out', str(tmp_path)], capture_output=True, text=True, cwd=project_root())
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r'fashion-nb: cell \d+ failed: ParamError: epochs must be at least 1', last), result.stderr
    assert str(tmp_path/'end_to_end.ipynb') in last
