"""Files written whole or not at all, on real full and read-only disks: a small tmpfs mounted for the test (as root on
Linux; skipped where mounting is not allowed). The write's own error comes out, and no partial or temporary file stays."""
import contextlib
import errno
import subprocess
import sys

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
