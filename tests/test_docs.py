"The docs: README and home page agree, every notebook processes, and every page renders whole in a real browser."
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import copy_checkout
from fashion_nb.core import project_root

ROOT = project_root()
BIN = Path(sys.executable).parent
spec = importlib.util.spec_from_file_location('preview_docs', ROOT/'scripts'/'preview_docs.py')
preview_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(preview_docs)


def shell_blocks(markdown: str) -> list[str]:
    return [b.strip() for b in re.findall(r'```sh\n(.*?)```', markdown, re.S)]


def test_readme_agrees_with_the_home_page():
    index = nbformat.read(ROOT/'nbs'/'index.ipynb', as_version=4)
    home = '\n\n'.join(c.source for c in index.cells if c.cell_type == 'markdown')
    readme = (ROOT/'README.md').read_text()
    assert shell_blocks(readme) == shell_blocks(home) and len(shell_blocks(readme)) >= 2
    assert 'make demo' in shell_blocks(readme)[0] and 'make test' in shell_blocks(readme)[0]
    headings = lambda text: re.findall(r'^#+ .+$', text, re.M)
    assert headings(readme) == headings(home)


def test_the_readmes_links_reach_files_of_the_repository():
    "The README sits at the top of the repository, the pages it links to in nbs/."
    targets = re.findall(r'\]\(([^)\s]+)\)', (ROOT/'README.md').read_text())
    local = [t.split('#')[0] for t in targets if not re.match(r'[a-z]+:|#', t)]
    assert any(t.startswith('nbs/') and t.endswith('.ipynb') for t in local), local
    assert [t for t in local if not (ROOT/t).exists()] == []


def test_every_module_has_a_page_that_the_browser_check_reads_its_whole_api_from():
    "The browser check below looks on each page for every name its module exports; a module that no notebook exports has no page."
    pages = preview_docs.expected_pages()
    documented = {n for p in pages.values() for n in p['names'] + p['constants']}
    for module in sorted((ROOT/'fashion_nb').glob('[!_]*.py')):
        exported = set(importlib.import_module(f'fashion_nb.{module.stem}').__all__)
        assert exported and exported <= documented, (module.stem, exported - documented)


def test_the_check_fails_a_broken_page():
    want = {'title': 'Data', 'description': 'Where the data is.', 'names': ['load_split'], 'constants': ['CLASS_NAMES'],
            'figures': 2}
    dom = "<h1>Data</h1><p>Where the data is.</p><h3>load_split¶</h3><p><code>CLASS_NAMES</code></p><img src=x><img src=y>"
    assert preview_docs.problems(dom, want) == []
    broken = "<h1>Dat</h1><img src=x><pre>Traceback (most recent call last):</pre>"
    found = preview_docs.problems(broken, want)
    assert len(found) == 5, found  # title, description, API entries, a figure short, an error


@pytest.fixture(scope='module')
def processed(tmp_path_factory):
    "nbdev-proc-nbs run on a copy of the checkout (it works without Quarto, saying Quarto is missing)."
    copy = copy_checkout(tmp_path_factory.mktemp('checkout'))
    result = subprocess.run([BIN/'nbdev-proc-nbs'], cwd=copy, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return copy/'_proc'


def test_proc_nbs_gives_every_page_a_title_and_api_docs(processed):
    for page, want in preview_docs.expected_pages().items():
        nb = nbformat.read(processed/want['notebook'], as_version=4)
        front = nb.cells[0].source
        assert nb.cells[0].cell_type == 'raw' and f"title: {want['title']}" in front and 'description:' in front, page
        shown = '\n'.join(str(o.get('data', {}).get('text/markdown', '')) for c in nb.cells for o in c.get('outputs', []))
        for name in want['names']: assert f'### {name}\n' in shown, (page, name)


@pytest.mark.skipif(preview_docs.chromium() is None, reason='no Chromium on the PATH (Debian: apt-get install chromium)')
def test_pages_render_whole_in_chromium(processed, tmp_path):
    pages = preview_docs.render(processed, tmp_path)
    expected = preview_docs.expected_pages()
    assert sorted(p.name for p in pages) == sorted(expected)
    for page in pages:
        assert preview_docs.problems(preview_docs.dump_dom(page), expected[page.name]) == [], page.name
