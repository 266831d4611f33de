"`make lab`, the README's way into the notebooks: JupyterLab serves nbs/, and a kernel it starts imports this checkout's fashion_nb."
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from fashion_nb.core import project_root


def test_make_lab_serves_the_notebooks_and_its_kernel_imports_the_package(tmp_path):
    from jupyter_client import BlockingKernelClient
    root, token = project_root(), secrets.token_hex(16)
    options = f"--no-browser --ServerApp.port=0 --IdentityProvider.token={token}"  # port 0: any free port
    log = open(tmp_path/'lab.log', 'wb')
    server = subprocess.Popen(['make', '--no-print-directory', 'lab', f'LAB_ARGS={options}'], cwd=root,
                              env={**os.environ, 'JUPYTER_RUNTIME_DIR': str(tmp_path)},
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def call(path, method='GET'):
        request = urllib.request.Request(base + path, method=method, headers={'Authorization': f'token {token}'})
        with urllib.request.urlopen(request, timeout=30) as response: return response.read().decode()

    try:
        deadline = time.monotonic() + 180  # setup first, then the server
        while not (found := sorted(tmp_path.glob('jpserver-*.json'))):
            assert server.poll() is None, f"make lab stopped:\n{(tmp_path/'lab.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, 'JupyterLab did not start'
            time.sleep(0.5)
        info = json.loads(found[0].read_text())
        base = f"http://127.0.0.1:{info['port']}"
        assert Path(info['root_dir']) == root/'nbs'
        assert 'JupyterLab' in call('/lab')
        served = {item['name'] for item in json.loads(call('/api/contents'))['content']}
        assert {'index.ipynb', '00_data.ipynb', '05_end_to_end.ipynb', '15_performance.ipynb'} <= served
        kernel = json.loads(call('/api/kernels', 'POST'))
        client = BlockingKernelClient(connection_file=str(tmp_path/f"kernel-{kernel['id']}.json"))
        client.load_connection_file()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=120)
            printed = []
            reply = client.execute_interactive("import sys, fashion_nb; print(sys.prefix); print(fashion_nb.__file__)",
                                               output_hook=lambda m: printed.append(m['content'].get('text', '')),
                                               timeout=120)
        finally: client.stop_channels()
        assert reply['content']['status'] == 'ok', reply['content']
        prefix, package = ''.join(printed).split('\n')[:2]
        assert Path(prefix).resolve() == (root/'.venv').resolve() and Path(package).resolve().parent == root/'fashion_nb'
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make and the server it started
        try: server.wait(timeout=30)
        except subprocess.TimeoutExpired: os.killpg(server.pid, signal.SIGKILL); server.wait()
        log.close()
