"A wheel built from the checkout runs the tutorial from any folder, with none of the checkout's files."
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from fashion_nb.core import project_root

ROOT = project_root()


def test_installed_wheel_runs_outside_the_checkout(tmp_path, real_data_available):
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--quiet', '-w', tmp_path/'dist', ROOT],
                   check=True, capture_output=True)
    wheel = next((tmp_path/'dist').glob('fashion_nb-*.whl'))
    # a new environment with its own interpreter: fashion_nb from the wheel, the third-party packages from the project's venv
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', tmp_path/'venv'], check=True)
    site = next((tmp_path/'venv').glob('lib/python*/site-packages'))
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--quiet', '--target', site, wheel], check=True, capture_output=True)
    # a plain path line: the project's own .pth files, the editable checkout's among them, are not read
    (site/'project_packages.pth').write_text(str(Path(torch.__file__).parent.parent) + '\n')
    python = tmp_path/'venv'/'bin'/'python'
    elsewhere = tmp_path/'elsewhere'
    elsewhere.mkdir()
    data = sorted({str(p.parent) for p in real_data_available.values()})[0]
    env = {**os.environ, 'FASHION_NB_DATA': data, 'XDG_CACHE_HOME': str(tmp_path/'cache')}
    where = subprocess.run([python, '-c', 'import fashion_nb; print(fashion_nb.__file__)'], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where
    result = subprocess.run([python, '-c', 'import sys; from fashion_nb.cli import main; sys.exit(main())',
                             'run', '-p', 'epochs', '1', '-p', 'limit', '1000', '--no-progress', '--out', 'o'],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((elsewhere/'o'/'metrics.json').read_text())
    assert metrics['train_images'] == 1000 and metrics['test_accuracy'] > 0.3
    assert sorted(p.name for p in (elsewhere/'o').iterdir()) == ['confusion_matrix.png', 'end_to_end.ipynb', 'metrics.json', 'model.pt']
    assert 'test accuracy' in result.stdout


def test_an_empty_data_folder_given_explicitly_is_one_line(tmp_path):
    "A folder the user names is the only place looked in, even when the data is elsewhere on the machine."
    command = Path(sys.executable).parent/'fashion-nb'
    result = subprocess.run([command, 'run', '-p', 'data_dir', str(tmp_path), '-p', 'limit', '100', '--no-progress',
                             '--out', tmp_path/'out'], capture_output=True, text=True)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert f"DataNotFoundError: data_dir {tmp_path} lacks train-images-idx3-ubyte, train-labels-idx1-ubyte" in last, result.stderr
