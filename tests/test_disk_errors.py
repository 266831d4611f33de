"""Files written whole or not at all, on real full and read-only disks: a small tmpfs mounted for the test (as root on
Linux; skipped where mounting is not allowed). The write's own error comes out, and no partial or temporary file stays."""
import contextlib
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_nb.checkpoint import save_checkpoint
from fashion_nb.core import write_json
from fashion_nb.fast_network import FastNetwork


@contextlib.contextmanager
def small_disk(folder, size='64k'):
    "A tmpfs of `size` mounted on `folder` for the test's duration; skips the test where it cannot be mounted."
    folder.mkdir()
    if not sys.platform.startswith('linux'): pytest.skip('tmpfs mounts are a Linux test')
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(folder)], capture_output=True)
    if mounted.returncode != 0: pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try: yield folder
    finally: subprocess.run(['umount', '-l', str(folder)], check=False)


def read_only(folder):
    subprocess.run(['mount', '-o', 'remount,ro', str(folder)], check=True)


def test_a_full_disk_keeps_the_old_file_whole(tmp_path):
    with small_disk(tmp_path/'disk') as disk:
        target = write_json(disk/'metrics.json', {'test_accuracy': 0.87})
        with pytest.raises(OSError) as raised: write_json(target, {'history': list(range(100_000))})  # ~700 KB
        assert raised.value.errno == errno.ENOSPC
        assert target.read_text() == '{\n  "test_accuracy": 0.87\n}\n'
        assert sorted(p.name for p in disk.iterdir()) == ['metrics.json']  # no temporary file left


def test_a_checkpoint_too_large_for_the_disk_is_absent(tmp_path):
    with small_disk(tmp_path/'disk', size='32k') as disk:  # the tutorial's weights are about 140 KB
        with pytest.raises(OSError) as raised: save_checkpoint(disk/'model.pt', FastNetwork())
        assert raised.value.errno == errno.ENOSPC or 'No space' in str(raised.value)
        assert list(disk.iterdir()) == []


def test_a_read_only_folder_gives_the_writes_own_error(tmp_path):
    with small_disk(tmp_path/'disk') as disk:
        write_json(disk/'metrics.json', {'test_accuracy': 0.87})
        read_only(disk)
        with pytest.raises(OSError) as raised: write_json(disk/'metrics.json', {'test_accuracy': 0.9})
        assert raised.value.errno == errno.EROFS
        assert (disk/'metrics.json').read_text() == '{\n  "test_accuracy": 0.87\n}\n'


def batch(out, *extra):
    "`fashion-nb batch` of two small runs into `out`, one worker, no bar: its exit code and its stderr."
    done = subprocess.run([Path(sys.executable).parent/'fashion-nb', 'batch', '-p', 'limit', '300', '-p', 'val_size', '200',
                           '-p', 'epochs', '1', '-p', 'seed', '0,1', '--workers', '1', '--no-progress', '--out', str(out),
                           *extra], capture_output=True, text=True, timeout=600)
    return done.returncode, done.stderr


def notebooks_whole(folder):
    "Every notebook under `folder` reads as a notebook: none was left truncated under a name."
    import nbformat
    for path in folder.rglob('*.ipynb'): nbformat.read(path, as_version=4)
    return [p.name for p in folder.rglob('*.partial.ipynb')]


def test_a_batch_on_a_full_disk_stops_in_one_line_and_keeps_no_half_notebook(tmp_path, real_data_available):
    with small_disk(tmp_path/'disk', size='400k') as disk:  # a run writes about 0.5 MB: the first cannot finish
        code, err = batch(disk)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and 'Traceback' not in err, err
        assert f"stopped: cannot write {disk}" in lines[0] and f"[Errno {errno.ENOSPC}]" in lines[0], lines[0]
        assert "0 of 2 runs finished" in lines[0] and "the same command runs the rest" in lines[0], lines[0]
        assert notebooks_whole(disk) == []
        assert not list(disk.rglob('metrics.json'))  # no run looks finished


def test_a_batch_into_a_read_only_folder_is_refused_in_one_line(tmp_path, real_data_available):
    with small_disk(tmp_path/'disk') as disk:
        read_only(disk)
        code, err = batch(disk)
        assert code == 1 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
        assert os.strerror(errno.EROFS) in err, err
        assert list(disk.iterdir()) == []
