"The notebooks are the source: exporting and cleaning a copy of the checkout must change nothing."
import subprocess
import sys
from pathlib import Path

import nbformat

from conftest import copy_checkout
from fashion_nb.core import project_root

ROOT = project_root()
BIN = Path(sys.executable).parent


def changed_files(a: Path, b: Path, pattern: str):
    return sorted(str(p.relative_to(a)) for p in a.glob(pattern) if p.read_bytes() != (b/p.relative_to(a)).read_bytes())


def test_export_changes_nothing(tmp_path):
    copy = copy_checkout(tmp_path)
    subprocess.run([BIN/'nbdev-export'], cwd=copy, check=True, capture_output=True)
    assert changed_files(ROOT, copy, 'fashion_nb/*.py') == []
    assert sorted(p.name for p in (copy/'fashion_nb').glob('*.py')) == sorted(p.name for p in (ROOT/'fashion_nb').glob('*.py'))


def test_clean_changes_nothing_and_keeps_the_parameters_tag(tmp_path):
    copy = copy_checkout(tmp_path)
    subprocess.run([BIN/'nbdev-clean'], cwd=copy, check=True, capture_output=True)
    assert changed_files(ROOT, copy, 'nbs/*.ipynb') == []
    cleaned = nbformat.read(copy/'nbs'/'05_end_to_end.ipynb', as_version=4)
    tagged = [c for c in cleaned.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(tagged) == 1 and tagged[0].source.startswith('epochs: int')


def test_clean_would_strip_the_tag_without_the_setting(tmp_path):
    "The check above can fail: without `allowed_cell_metadata_keys`, nbdev-clean drops the tag."
    copy = copy_checkout(tmp_path)
    toml = copy/'pyproject.toml'
    toml.write_text(toml.read_text().replace('allowed_cell_metadata_keys = ["tags"]', ''))
    subprocess.run([BIN/'nbdev-clean', '--fname', 'nbs/05_end_to_end.ipynb'], cwd=copy, check=True, capture_output=True)
    cleaned = nbformat.read(copy/'nbs'/'05_end_to_end.ipynb', as_version=4)
    assert not any('parameters' in c.metadata.get('tags', []) for c in cleaned.cells)


def test_modules_import_each_other_in_one_direction():
    "No import cycle among fashion_nb's modules (run, batch and cli above all): each module's own imports, followed."
    import ast
    imports = {}
    for module in (ROOT/'fashion_nb').glob('[!_]*.py'):
        tree = ast.parse(module.read_text())
        found = {node.module.split('.')[-1] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
                 and (node.level == 1 or node.module.startswith('fashion_nb.'))}
        imports[module.stem] = found
    assert imports['cli'] >= {'run', 'batch'} and 'batch' not in imports['run'] and 'cli' not in imports['batch']

    def reaches(start, target, seen=()):
        return any(n == target or (n not in seen and reaches(n, target, (*seen, n))) for n in imports.get(start, ()))
    cycles = [m for m in imports if reaches(m, m)]
    assert cycles == [], cycles


def test_the_package_carries_the_end_to_end_notebook():
    "The wheel's copy has the source notebook's cells (`make export` writes it, without outputs), parameters tag included."
    def cells(path):
        return [(c.cell_type, c.source, c.metadata.get('tags', [])) for c in nbformat.read(path, as_version=4).cells]
    assert cells(ROOT/'fashion_nb'/'end_to_end.ipynb') == cells(ROOT/'nbs'/'05_end_to_end.ipynb')
    assert 'end_to_end.ipynb' in (ROOT/'pyproject.toml').read_text()  # declared as package data


def test_the_toolchain_is_pinned_and_ci_covers_linux_and_macos():
    import re
    import yaml
    pyproject = (ROOT/'pyproject.toml').read_text()  # read as text: tomllib needs Python 3.11, the project supports 3.10
    assert re.findall(r'"(nbdev[=<>~!][^"]*)"', pyproject) == ['nbdev==3.3.26']
    assert 'black_formatting' not in pyproject  # nbdev 3 no longer reads it
    assert any(line.startswith('nbdev==') for line in (ROOT/'constraints.txt').read_text().splitlines())
    assert '-c constraints.txt' in (ROOT/'scripts'/'setup.sh').read_text()
    test = yaml.safe_load((ROOT/'.github'/'workflows'/'test.yaml').read_text())['jobs']['test']
    assert test['strategy']['matrix'] == {'os': ['ubuntu-latest', 'macos-latest'], 'python': ['3.10', '3.13']}
    for workflow in ('test.yaml', 'deploy.yaml'):
        assert 'download.pytorch.org/whl/cpu' in (ROOT/'.github'/'workflows'/workflow).read_text()
    assert (ROOT/'LICENSE').read_text().split()[:3] == ['Apache', 'License', 'Version'] and 'license = "Apache-2.0"' in pyproject
