import gzip
import shutil
from pathlib import Path

import pytest
import torch

import fashion_nb.datafiles as datafiles
from fashion_nb.core import project_root


def idx_bytes(arr: torch.Tensor) -> bytes:
    "IDX bytes of a uint8 tensor, the format of the Fashion-MNIST files."
    header = bytes([0, 0, 0x08, arr.ndim]) + b''.join(d.to_bytes(4, 'big') for d in arr.shape)
    return header + arr.numpy().tobytes()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    "Make the project and system data folders point into an empty temporary folder, and unset $FASHION_NB_DATA."
    monkeypatch.setattr(datafiles, 'SYSTEM_DATA_DIR', tmp_path/'system')
    monkeypatch.setattr(datafiles, 'project_data_dir', lambda: tmp_path/'project'/'FashionMNIST'/'raw')
    monkeypatch.delenv(datafiles.ENV_VAR, raising=False)
    return tmp_path


@pytest.fixture(scope='session')
def real_data_available():
    "The real files; without them the test fails saying why (`make test` installs them)."
    try: return datafiles.find_data(download=False)
    except datafiles.DataNotFoundError as e: pytest.fail(f"the real data set is needed (make test installs it): {e}")


def write_split_files(folder: Path, images: torch.Tensor, labels: torch.Tensor, split='train', gz=True):
    "Write one split's two IDX files into `folder` and return their paths."
    folder.mkdir(parents=True, exist_ok=True)
    image_spec, label_spec = datafiles.SPLITS[split]
    paths = []
    for spec, arr in ((image_spec, images), (label_spec, labels)):
        path = folder/(spec.name + ('.gz' if gz else ''))
        raw = idx_bytes(arr)
        path.write_bytes(gzip.compress(raw) if gz else raw)
        paths.append(path)
    return paths


def copy_checkout(dest: Path) -> Path:
    "Copy what nbdev's commands read (configuration, notebooks, package, benchmark results) into `dest`."
    root = project_root()
    for name in ('pyproject.toml', 'README.md'): shutil.copy(root/name, dest/name)
    for folder in ('nbs', 'fashion_nb', 'bench'):
        shutil.copytree(root/folder, dest/folder, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    return dest
