"Batches under what real machines do: killed outright, two into one folder, the package edited midway, Ctrl-C and SIGTERM; small runs."
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fashion_nb.batch import LOCK_FILE
from fashion_nb.fingerprint import package_digest
from fashion_nb.report import read_summary
from test_batch import interrupted_batch
from test_end_to_end import leftovers, processes_tagged, short_notebook, traced  # noqa: F401 (traced: a fixture)

FAKE_METRICS = ("write_json(Path(out_dir)/'metrics.json', {'test_accuracy': 0.5, 'train_accuracy': 0.5, "
                "'history': [{'accuracy': 0.5}], 'seconds': {'total': 1.0}%s})")  # what a batch reads of a run


def start_batch(out: Path, notebook: Path, seeds: list, workers: int = 1, cwd: Path | None = None) -> subprocess.Popen:
    "`run_batch` of a short notebook over `seeds`, in a process of its own (a session of its own too: the test's terminal is not its)."
    script = ("import sys; from fashion_nb.batch import run_batch\n"
              f"run_batch({{'seed': {seeds!r}}}, sys.argv[1], workers={workers}, notebook=sys.argv[2], progress=False)")
    return subprocess.Popen([sys.executable, '-c', script, str(out), str(notebook)], cwd=cwd, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process is None or process.poll() is None, f"{what}: the batch ended first: {process.communicate()}"
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.1)


def gone_within(tag: str, seconds: float) -> set:
    "The processes tagged `tag` still alive after up to `seconds`; those left are killed, so that no test leaves them behind."
    deadline = time.monotonic() + seconds
    while (alive := processes_tagged(tag)) and time.monotonic() < deadline: time.sleep(0.2)
    for pid in alive:
        try: os.kill(pid, signal.SIGKILL)
        except ProcessLookupError: pass
    return alive


def test_a_batch_killed_outright_takes_its_workers_and_kernels_with_it(tmp_path, traced):
    "SIGKILL to the batch alone, as the out-of-memory killer sends it, while two workers run: within 15 s nothing of it is left."
    tmp, tag = traced
    notebook = short_notebook(tmp_path, "import time\nfrom pathlib import Path\n(Path(out_dir)/'started').touch()\ntime.sleep(60)")
    batch = start_batch(tmp_path/'out', notebook, [0, 1, 2], workers=2)
    try:
        wait_for(lambda: len(list((tmp_path/'out').glob('*/started'))) == 2, 120, 'two runs started', batch)
        os.kill(batch.pid, signal.SIGKILL)
        batch.wait()
        assert gone_within(tag, 15) == set()  # the two workers, their kept kernels, multiprocessing's helper
    finally:
        if batch.poll() is None: batch.kill(); batch.wait()
        gone_within(tag, 0)
    assert len(list((tmp_path/'out').glob('*/started'))) == 2 and not list((tmp_path/'out').glob('*/metrics.json'))
    assert leftovers(tmp) == []  # the kernels' connection files included


def test_a_second_batch_into_the_same_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    "The first batch takes over a lock file whose process is gone; a second one is refused in one line naming the first."
    out = tmp_path/'out'
    out.mkdir()
    gone = subprocess.Popen([sys.executable, '-c', ''])
    gone.wait()
    (out/LOCK_FILE).write_text(f"{gone.pid}\n")  # as a batch killed outright leaves it
    notebook = short_notebook(tmp_path, "import time\nfrom pathlib import Path\nfrom fashion_nb.core import write_json\ntime.sleep(3)",
                              FAKE_METRICS % '')
    first = start_batch(out, notebook, [0, 1])
    try:
        wait_for(lambda: (out/LOCK_FILE).is_file() and (out/LOCK_FILE).read_text() == f"{first.pid}\n", 60, 'the lock taken', first)
        second = subprocess.run([Path(sys.executable).parent/'fashion-nb', 'batch', '-p', 'seed', '0', '--no-progress', '--out', out],
                                capture_output=True, text=True, timeout=60)
        assert first.poll() is None  # refused while the first still runs: it did not wait for it
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None: first.kill(); first.wait()
    assert second.returncode == 1 and second.stdout == '', second
    assert second.stderr == (f"fashion-nb: --out {out} is in use by another batch (PID {first.pid}); wait for it to end, "
                             "or give another folder\n"), second.stderr
    assert first.returncode == 0, err
    assert sorted(r['status'] for r in read_summary(out/'summary.csv')) == ['done', 'done']
    assert not (out/LOCK_FILE).exists()


def test_a_package_edited_during_a_batch_is_not_run_as_its_old_code(tmp_path):
    "The first of two runs edits the package (a copy of it); the second runs the edited code, under the edited code's digest."
    copy = tmp_path/'copy'
    shutil.copytree(Path(__file__).parents[1]/'fashion_nb', copy/'fashion_nb', ignore=shutil.ignore_patterns('__pycache__'))
    core = copy/'fashion_nb'/'core.py'
    before = package_digest(copy/'fashion_nb')
    notebook = short_notebook(tmp_path,
                              "import fashion_nb.core\nfrom pathlib import Path\nfrom fashion_nb.core import write_json\n"
                              f"assert fashion_nb.core.__file__ == {str(core)!r}  # the copy: the checkout is never edited\n"
                              "edited = hasattr(fashion_nb.core, 'EDITED')\n"
                              "if not edited:\n"
                              "    with open(fashion_nb.core.__file__, 'a') as f: f.write('\\nEDITED = True  # an edit made midway\\n')",
                              FAKE_METRICS % ", 'edited': edited")
    # the copy comes first on the path of the batch, its workers and their kernels (which start in the current folder)
    batch = subprocess.run([sys.executable, '-c', "import sys; from fashion_nb.batch import run_batch; "
                            "run_batch({'seed': [0, 1]}, sys.argv[1], workers=1, notebook=sys.argv[2], progress=False)",
                            str(tmp_path/'out'), str(notebook)],
                           cwd=copy, env={**os.environ, 'PYTHONPATH': str(copy)}, capture_output=True, text=True, timeout=300)
    assert batch.returncode == 0, batch.stderr
    after = package_digest(copy/'fashion_nb')
    assert after != before
    runs = sorted((json.loads(p.read_text()) | {'folder': p.parent} for p in (tmp_path/'out').glob('*/metrics.json')),
                  key=lambda m: m['edited'])
    assert [(m['edited'], m['fingerprint']['package']) for m in runs] == [(False, before), (True, after)]
    log = (runs[1]['folder']/'kernel.log').read_text()
    assert f"fashion-nb: the package in {copy/'fashion_nb'} changed since this worker's kernel imported it" in log, log


@pytest.mark.parametrize('terminate', [False, True], ids=['ctrl-c', 'sigterm'])
def test_an_interrupted_batch_leaves_nothing_running_and_no_temporary_file(tmp_path, traced, real_data_available, terminate):
    "Ctrl-C (SIGINT to the process group) or SIGTERM to the batch: no process and nothing in $TMPDIR, kernel connection files included."
    tmp, tag = traced
    interrupted_batch(['--workers', '1'], tmp_path/'out', terminate=terminate)
    assert gone_within(tag, 15) == set()
    assert leftovers(tmp) == []
