"""The screenshots of nbs/18_tensorboard.ipynb, from a real TensorBoard server: a tiny sweep's logs (three learning
rates, 1,000 training pictures, 3 epochs, each run written by fashion_nb.tensorboard.write_run into a folder of its own),
TensorBoard started on them on localhost, its scalars and HParams views photographed in headless Chromium, the server
stopped. The pictures replace nbs/images/tensorboard_scalars.png and tensorboard_hparams.png, each written whole.

    .venv/bin/python scripts/tensorboard_screenshots.py      # or: make tensorboard-screenshots
"""
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import matplotlib.image

from fashion_nb.core import FashionNBError, atomic_path
from fashion_nb.data import holdout, load_split
from fashion_nb.engine import fit
from fashion_nb.fast_network import FastNetwork
from fashion_nb.inference import accuracy, get_all_preds
from fashion_nb.tensorboard import check_tensorboard, write_run
from fashion_nb.training import seed_everything

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT/'nbs'/'images'
RATES = (0.002, 0.005, 0.01)
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync']
# Each view: its URL fragment, the window's size and the zoom. The scalars dashboard reads settings from the URL: no
# smoothing (it bends a curve of three points), and only the per-epoch tags (train/, valid/), the results being single
# points that the HParams view shows; that view zoomed out, so that the table's first columns (the settings that differ,
# then the others, then the results) reach the test accuracy.
VIEWS = {'scalars': ('#scalars&_smoothingWeight=0&tagFilter=%5E(train%7Cvalid)%2F', '1280,960', 1),
         'hparams': ('#hparams', '1920,400', 0.75)}


def write_sweep(log_root: Path) -> list[str]:
    "Train one small run per learning rate and write each into its own folder under `log_root`; return the names."
    train_all, test = load_split('train'), load_split('test')
    pool, valid = holdout(train_all, 300)
    train = pool.head(1000)
    names = []
    for lr in RATES:
        params = {'model': 'tutorial', 'epochs': 3, 'batch_size': 50, 'lr': lr, 'schedule': 'constant', 'seed': 0,
                  'limit': len(train), 'val_size': len(valid), 'device': 'cpu'}
        seed_everything(params['seed'])
        model = FastNetwork()
        history = fit(model, train, epochs=params['epochs'], batch_size=params['batch_size'], lr=lr,
                      seed=params['seed'], device='cpu', quiet=True, valid=valid)
        logits = get_all_preds(model, test)
        metrics = {'train_images': len(train), 'test_accuracy': accuracy(logits, test.labels),
                   'train_accuracy': accuracy(get_all_preds(model, train), train.labels),
                   'val_accuracy': history[-1]['valid_accuracy'], 'val_loss': history[-1]['valid_loss']}
        names.append(f"lr={lr:g}")
        write_run(log_root/names[-1], params, history, model, test, logits, metrics, sample=200)
        print(f"tensorboard_screenshots: {names[-1]}: test accuracy {metrics['test_accuracy']:.4f}")
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for_runs(url: str, names: list[str], server: subprocess.Popen, timeout: float = 90):
    "Wait until the server answers and has read every run's results."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None: sys.exit(f"tensorboard_screenshots: TensorBoard exited ({server.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/data/runs", timeout=5) as answer: runs = json.load(answer)
            with urllib.request.urlopen(f"{url}/data/plugin/scalars/tags", timeout=5) as answer: tags = json.load(answer)
            if set(names) <= set(runs) and all('result/test_accuracy' in tags.get(n, {}) for n in names): return
        except OSError:
            pass  # not listening yet
        time.sleep(1)
    sys.exit(f"tensorboard_screenshots: TensorBoard did not list the runs within {timeout:.0f} s")


def find_browser() -> str:
    browser = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')
    if browser is None: sys.exit("tensorboard_screenshots: no Chromium found (Debian, Ubuntu: apt-get install chromium)")
    return browser


def screenshot(browser: str, url: str, size: str, scale: float, path: Path):
    "Photograph `url` in headless Chromium into `path`, atomically; stop if the picture is nearly one colour."
    with tempfile.TemporaryDirectory() as profile, atomic_path(path) as tmp:
        shot = Path(profile)/'shot.png'
        # TensorBoard draws itself in JavaScript: Chromium's virtual time lets it fetch and render before the picture
        subprocess.run([browser, *CHROMIUM_FLAGS, f'--user-data-dir={profile}/user', f'--screenshot={shot}',
                        f'--window-size={size}', f'--force-device-scale-factor={scale}', '--hide-scrollbars',
                        '--virtual-time-budget=15000', url], check=True, capture_output=True, timeout=180)
        pixels = matplotlib.image.imread(shot)
        colours = len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::7].tolist()})
        if colours < 50: sys.exit(f"tensorboard_screenshots: {path.name} has {colours} colours: a blank page?")
        shutil.copyfile(shot, tmp)


def main():
    check_tensorboard()  # both before training: without them, nothing to photograph
    browser = find_browser()
    with tempfile.TemporaryDirectory() as work:
        log_root = Path(work)/'runs'/'tb'
        names = write_sweep(log_root)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # started where the logs are, with a relative --logdir: the page shows 'runs/tb', not this machine's folders
        server = subprocess.Popen([sys.executable, '-m', 'tensorboard.main', '--logdir', 'runs/tb', '--host', '127.0.0.1',
                                   '--port', str(port)], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_runs(url, names, server)
            for view, (fragment, size, scale) in VIEWS.items():
                screenshot(browser, f"{url}/{fragment}", size, scale, IMAGES/f'tensorboard_{view}.png')
                print(f"tensorboard_screenshots: wrote nbs/images/tensorboard_{view}.png")
        finally:
            server.terminate()
            try: server.wait(timeout=20)
            except subprocess.TimeoutExpired: server.kill(); server.wait()


if __name__ == '__main__':
    try: main()
    except FashionNBError as e: sys.exit(f"tensorboard_screenshots: {e}")  # no tensorboard, no data: one line
