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
