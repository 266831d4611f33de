"""scripts/setup.sh, run for real on a copy of it, with fake `apt-get`, `sudo`, `id` and Pythons first on a bare PATH.

Nothing is installed: the fakes write each call into one log, the same file that set-up's own output goes to, so the log
shows what set-up said and what it ran, in order. The fake Pythons know their version (a file beside each) and
play the parts set-up asks of them: `-m venv` copies the fake into the new venv, `-m pip` does nothing, and the data
search finds the files once the fake apt-get has installed Debian's package or the fake download has run."""
import shutil
import subprocess
from pathlib import Path

import pytest

from fashion_nb.core import project_root

ROOT = project_root()
TOOLS = ['bash', 'cat', 'cksum', 'cut', 'dirname', 'rm', 'touch', 'mkdir', 'cp', 'make']  # run by setup.sh, make, fakes
SYSTEM_DATA, DOWNLOADED = '/usr/share/datasets/fashion-mnist', 'data/FashionMNIST/raw'

FAKE_APT = f"""#!/bin/bash
echo "CALL apt-get $*" >> "$FAKE_LOG"
for word in "$@"; do
  if [ "$word" = "$FAKE_APT_FAILS" ]; then
    echo "E: Could not get lock /var/lib/dpkg/lock-frontend (a fake failure of $word)" >&2; exit 100
  fi
done
if [ "$1" = install ]; then
  for word in "$@"; do [ "$word" = dataset-fashion-mnist ] && echo {SYSTEM_DATA} > "$FAKE_DIR/data"; done
fi
exit 0
"""
FAKE_SUDO = """#!/bin/bash
echo "CALL sudo $*" >> "$FAKE_LOG"
exec "$@"
"""
FAKE_ID = """#!/bin/bash
cat "$FAKE_DIR/uid"
"""
FAKE_PYTHON = f"""#!/bin/bash
# A fake Python whose version is in the file beside it
name=$(cat "$0.name")
case "$*" in
  *version_info*) cat "$0.version" ;;
  "-m venv "*) echo "CALL $name -m venv $3" >> "$FAKE_LOG"
               mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && cp "$0.version" "$3/bin/python.version"
               echo venv > "$3/bin/python.name" ;;
  "-m pip "*) echo "CALL $name -m pip" >> "$FAKE_LOG" ;;
  *"find_data(download=False)"*) [ -e "$FAKE_DIR/data" ] || exit 1; echo "setup: data in $(cat "$FAKE_DIR/data")" ;;
  *"find_data(download=True)"*)
    if [ ! -e "$FAKE_DIR/data" ]; then echo "CALL download" >> "$FAKE_LOG"; echo {DOWNLOADED} > "$FAKE_DIR/data"; fi
    echo "setup: data in $(cat "$FAKE_DIR/data")" ;;
  *) echo "CALL $name $1" >> "$FAKE_LOG" ;;
esac
"""
FAKE_TOOL = """#!/bin/bash
echo "CALL ${0##*/} $*" >> "$FAKE_LOG"
"""


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def fake_python(path: Path, version: str, name: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(f'{path}.version').write_text(version + '\n')
    Path(f'{path}.name').write_text((name or path.name) + '\n')
    return write_script(path, FAKE_PYTHON)


class Sandbox:
    "A copy of set-up's files, a PATH of fakes, and the log they share."
    def __init__(self, tmp: Path):
        self.repo, self.bin, self.state, self.log = tmp/'repo', tmp/'bin', tmp/'state', tmp/'log'
        for d in (self.repo/'scripts', self.bin, self.state): d.mkdir(parents=True)
        for name in ('scripts/setup.sh', 'pyproject.toml', 'constraints.txt', 'Makefile'):
            shutil.copy2(ROOT/name, self.repo/name)
        for tool in TOOLS:
            found = shutil.which(tool)
            if found is None: pytest.skip(f"{tool} is not on the PATH")
            (self.bin/tool).symlink_to(found)
        write_script(self.bin/'apt-get', FAKE_APT)
        write_script(self.bin/'sudo', FAKE_SUDO)
        write_script(self.bin/'id', FAKE_ID)
        fake_python(self.bin/'python3', '3.11')
        self.uid = 0

    @property
    def venv_python(self) -> Path: return self.repo/'.venv'/'bin'/'python'

    def run(self, *args, uid=None, **env) -> subprocess.CompletedProcess:
        "Run `args` (set-up by default) in the copy, its output into the shared log; `env` adds to a bare environment."
        (self.state/'uid').write_text(f'{self.uid if uid is None else uid}\n')
        base = {'PATH': str(self.bin), 'HOME': str(self.state), 'FAKE_LOG': str(self.log), 'FAKE_DIR': str(self.state),
                'FAKE_APT_FAILS': ''}
        start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, 'ab') as out:
            result = subprocess.run(args or ['scripts/setup.sh', '--tests'], cwd=self.repo, env={**base, **env},
                                    stdout=out, stderr=subprocess.STDOUT, timeout=60)
        result.lines = self.log.read_bytes()[start:].decode().splitlines()
        return result


def calls(lines, prefix='CALL apt-get'): return [l for l in lines if l.startswith(prefix)]


@pytest.fixture
def sandbox(tmp_path): return Sandbox(tmp_path)


@pytest.mark.parametrize('uid', [0, 1000])
def test_no_apt_runs_no_apt_get_and_set_up_still_finishes(sandbox, uid):
    "A fresh clone, no compiler, no Chromium, no data: with NO_APT=1 each apt step says it is skipped, and none runs."
    result = sandbox.run(uid=uid, NO_APT='1')
    assert result.returncode == 0, result.lines
    assert calls(result.lines) == [] and calls(result.lines, 'CALL sudo') == []
    for packages in ('gcc libc6-dev', 'chromium', 'dataset-fashion-mnist'):
        assert sum(l.startswith(f'setup: NO_APT=1: not running apt-get install {packages} (') for l in result.lines) == 1
    assert 'CALL download' in result.lines and result.lines[-1] == f'setup: data in {DOWNLOADED}'


def test_the_fakes_are_live_without_no_apt(sandbox):
    "The same run without NO_APT calls apt-get three times, so the test above can fail."
    result = sandbox.run()
    assert result.returncode == 0, result.lines
    installed = [c.split()[-1] for c in calls(result.lines, 'CALL apt-get install')]
    assert installed == ['libc6-dev', 'chromium', 'dataset-fashion-mnist']
    assert 'CALL download' not in result.lines and result.lines[-1] == f'setup: data in {SYSTEM_DATA}'


@pytest.mark.parametrize('uid, sudo', [(0, ''), (1000, 'sudo ')])
def test_every_apt_step_is_announced_before_it_runs(sandbox, uid, sudo):
    result = sandbox.run(uid=uid)
    assert result.returncode == 0, result.lines
    runs = calls(result.lines, 'CALL apt-get')
    assert [r.split()[2] for r in runs] == ['update', 'install', 'install', 'install']  # the lists are read once
    assert len(calls(result.lines, 'CALL sudo')) == (4 if sudo else 0)
    announced = None  # set-up's last "running ..." line
    for line in result.lines:
        if line.startswith('setup: running '): announced = line
        elif line.startswith('CALL apt-get'):
            words = line.split()[2:]
            command = 'apt-get update' if words[0] == 'update' else 'apt-get install -y ' + ' '.join(words[3:])
            assert announced and f'{sudo}{command}' in announced, (line, announced)
    assert any('NO_APT=1 skips every apt-get step' in l for l in result.lines)


@pytest.mark.parametrize('fails', ['dataset-fashion-mnist', 'update'])
def test_a_failed_apt_install_of_the_data_falls_back_to_the_download(sandbox, fails):
    "The package database locked by another apt-get, or no such package: set-up goes on, to torchvision's download."
    result = sandbox.run(FAKE_APT_FAILS=fails)
    assert result.returncode == 0, result.lines
    fallback = [l for l in result.lines if 'dataset-fashion-mnist was not installed' in l]
    assert fallback == ['setup: dataset-fashion-mnist was not installed: '
                        'downloading Fashion-MNIST with torchvision into data/ instead']
    assert result.lines.index(fallback[0]) < result.lines.index('CALL download')
    assert len(calls(result.lines, 'CALL apt-get update')) == 1  # a failed update is not retried by each later step
    assert result.lines[-1] == f'setup: data in {DOWNLOADED}'


def test_without_apt_get_the_data_is_downloaded(sandbox):
    "macOS: no apt-get at all, no step mentions it."
    (sandbox.bin/'apt-get').unlink()
    result = sandbox.run()
    assert result.returncode == 0, result.lines
    assert not any('apt-get' in l for l in result.lines)
    assert 'setup: downloading Fashion-MNIST with torchvision into data/' in result.lines and 'CALL download' in result.lines


def test_a_second_run_only_reports_the_data(sandbox):
    "Once everything is there, set-up installs nothing and says one line."
    assert sandbox.run().returncode == 0
    for tool in ('cc', 'chromium'): write_script(sandbox.bin/tool, FAKE_TOOL)  # as apt-get would have installed them
    result = sandbox.run()
    assert result.returncode == 0 and result.lines == [f'setup: data in {SYSTEM_DATA}'], result.lines


def test_a_venv_with_python_3_9_is_rebuilt(sandbox):
    fake_python(sandbox.venv_python, '3.9', 'venv')
    result = sandbox.run()
    assert result.returncode == 0, result.lines
    assert 'setup: .venv has Python 3.9, fashion_nb needs 3.10 or newer: rebuilding it with python3' in result.lines
    assert 'CALL python3 -m venv .venv' in result.lines and 'CALL venv -m pip' in result.lines
    assert Path(f'{sandbox.venv_python}.version').read_text().strip() == '3.11'


def test_a_venv_whose_python_does_not_run_is_rebuilt(sandbox):
    "Its Python removed or upgraded under it: the venv's python fails, and set-up builds a new one."
    sandbox.venv_python.parent.mkdir(parents=True)
    write_script(sandbox.venv_python, '#!/bin/bash\nexit 127\n')
    result = sandbox.run()
    assert result.returncode == 0, result.lines
    assert ('setup: .venv has a Python that does not run, fashion_nb needs 3.10 or newer: rebuilding it with python3'
            in result.lines)
    assert Path(f'{sandbox.venv_python}.version').read_text().strip() == '3.11'


def test_a_venv_with_python_3_9_and_no_newer_python_stops_in_one_line(sandbox):
    fake_python(sandbox.bin/'python3', '3.9')
    fake_python(sandbox.venv_python, '3.9', 'venv')
    result = sandbox.run()
    assert result.returncode == 1
    assert len(result.lines) == 1 and 'PYTHON=python3.12 make test' in result.lines[0], result.lines
    assert result.lines[0].startswith('setup: .venv has Python 3.9, and python3 is not 3.10 or newer')
    assert Path(f'{sandbox.venv_python}.version').read_text().strip() == '3.9'  # left as it was


def test_a_fresh_clone_with_python3_at_3_9_uses_a_newer_python_on_the_path(sandbox):
    "macOS's /usr/bin/python3 is 3.9; Homebrew's python3.12 beside it is taken instead."
    fake_python(sandbox.bin/'python3', '3.9')
    fake_python(sandbox.bin/'python3.12', '3.12')
    result = sandbox.run()
    assert result.returncode == 0, result.lines
    assert 'setup: creating .venv with python3.12 (Python 3.12)' in result.lines
    assert Path(f'{sandbox.venv_python}.version').read_text().strip() == '3.12'


@pytest.mark.parametrize('on_the_command_line', [False, True])
def test_make_test_with_no_apt_runs_no_apt_get(sandbox, on_the_command_line):
    "`NO_APT=1 make test` (or `make test NO_APT=1`), the project's Makefile with its tools faked: set-up, tests, no apt-get."
    fake_python(sandbox.venv_python, '3.11', 'venv')
    for tool in ('nbdev-test', 'pytest'): write_script(sandbox.venv_python.parent/tool, FAKE_TOOL)
    result = sandbox.run('make', 'test', 'NO_APT=1') if on_the_command_line else sandbox.run('make', 'test', NO_APT='1')
    assert result.returncode == 0, result.lines
    assert calls(result.lines) == [] and any(l.startswith('setup: NO_APT=1: not running apt-get') for l in result.lines)
    ran = [l.split()[1] for l in calls(result.lines, 'CALL')]
    assert [tool for tool in ran if tool in ('nbdev-test', 'pytest')] == ['nbdev-test', 'pytest']


def test_ci_runs_once_per_change_with_a_browser_that_exists():
    "Pushes to main and pull requests, not every push as well; Chrome as GitHub's Ubuntu images carry it, no hidden failure."
    import yaml
    workflow = yaml.safe_load((ROOT/'.github'/'workflows'/'test.yaml').read_text())
    on = workflow.get('on', workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert set(on) == {'push', 'pull_request', 'workflow_dispatch'} and on['push'] == {'branches': ['main']}
    assert workflow['concurrency']['group'] == '${{ github.workflow }}-${{ github.ref }}'
    runs = [step.get('run', '') for step in workflow['jobs']['test']['steps']]
    assert not any('chromium-browser' in r or '|| true' in r for r in runs)
    assert 'google-chrome --version' in runs
    assert "shutil.which('google-chrome')" in (ROOT/'scripts'/'preview_docs.py').read_text()  # a name the docs test looks for


def test_torch_has_the_lower_bound_the_code_needs():
    "Adam(fused=True) on the CPU came with torch 2.4 (pytorch/pytorch#123074; 2.3's fused Adam was CUDA only)."
    import re
    import torch
    from fashion_nb.engine import adam
    pyproject = (ROOT/'pyproject.toml').read_text()
    assert re.findall(r'"(torch(?:vision)?>=[^"]+)"', pyproject) == ['torch>=2.4', 'torchvision>=0.19']
    assert adam([torch.zeros(1, requires_grad=True)]).defaults['fused'] is True  # what the bound is for
    assert tuple(int(n) for n in torch.__version__.split('+')[0].split('.')[:2]) >= (2, 4)
