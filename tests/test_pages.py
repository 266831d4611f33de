"The pages are published as committed: their outputs must not carry this machine's paths, errors, stderr or float noise."
import os
import re
import tempfile
from pathlib import Path

import nbformat
import pytest

from fashion_nb.core import project_root

ROOT = project_root()
NOTEBOOKS = sorted((ROOT/'nbs').glob('[!_]*.ipynb'))
TUTORIAL = ['00_data', '01_model', '02_training', '03_inference', '04_confusion', '05_end_to_end']


def machine_paths() -> list[str]:
    "Folders whose absolute paths must never appear on a page: this checkout, the home and temp folders, common roots."
    own = {str(ROOT), str(ROOT.resolve()), os.path.expanduser('~'), tempfile.gettempdir(), str(Path(tempfile.gettempdir()).resolve())}
    return sorted({p.rstrip('/') + '/' for p in own if p not in ('', '/')} | {'/tmp/', '/home/', '/Users/', '/root/', '/private/var/'})


def output_text(output) -> str:
    "The text a reader sees in one output (images excluded)."
    if output.output_type == 'stream': return output.text
    if output.output_type == 'error': return '\n'.join([output.ename, output.evalue, *output.traceback])
    data = output.get('data', {})
    return '\n'.join(str(v) for k, v in data.items() if k.startswith('text/') or k == 'application/json')


def problems(nb) -> list[str]:
    "What is wrong with a notebook's committed outputs, one line each."
    found, roots = [], machine_paths()
    for i, cell in enumerate(nb.cells):
        for output in cell.get('outputs', []) if cell.cell_type == 'code' else []:
            where = f"cell {i}"
            if output.output_type == 'stream' and output.name == 'stderr': found.append(f"{where}: stderr output")
            if output.output_type == 'error': found.append(f"{where}: an error ({output.ename})")
            text = output_text(output)
            found += [f"{where}: machine path {root!r}" for root in roots if root in text]
            found += [f"{where}: {word}" for word in ('Traceback', 'KeyboardInterrupt') if word in text]
            found += [f"{where}: unrounded number {m!r}" for m in re.findall(r'\d\.\d{9,}', text)[:1]]
    return found


@pytest.mark.parametrize('notebook', NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_are_clean(notebook):
    assert problems(nbformat.read(notebook, as_version=4)) == []


def test_the_scan_finds_each_kind_of_leak():
    "The check above can fail: a notebook with one of each problem gets one line for each."
    nb = nbformat.v4.new_notebook()
    out = nbformat.v4.new_output
    nb.cells = [nbformat.v4.new_code_cell('x', outputs=[
        out('stream', name='stderr', text='[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel\n'),
        out('execute_result', data={'text/plain': f"'{ROOT}/runs/demo'"}, execution_count=1),
        out('stream', name='stdout', text=f"saved in {tempfile.gettempdir()}/tmp5_54b5fz/x.png\n"),
        out('execute_result', data={'text/plain': "0.5853999853134155"}, execution_count=1),
        out('error', ename='ValueError', evalue='bad', traceback=['Traceback (most recent call last):']),
    ])]
    found = problems(nb)
    for expected in ('stderr output', 'KeyboardInterrupt', f"machine path '{str(ROOT).rstrip('/')}/'", "'/tmp/'",
                     'unrounded number', 'an error (ValueError)', 'Traceback'):
        assert any(expected in line for line in found), (expected, found)


def test_every_tutorial_page_shows_a_figure_from_a_real_run():
    for name in TUTORIAL:
        nb = nbformat.read(ROOT/'nbs'/f'{name}.ipynb', as_version=4)
        shown = [o for c in nb.cells if c.cell_type == 'code' and not c.source.startswith('#| hide')
                 for o in c.outputs if 'image/png' in o.get('data', {})]
        assert shown, f"{name} shows no figure"


def test_sidebar_has_the_two_parts_in_file_order():
    import yaml
    contents = yaml.safe_load((ROOT/'nbs'/'sidebar.yml').read_text())['website']['sidebar']['contents']
    sections = {s['section']: s['contents'] for s in contents if isinstance(s, dict)}
    assert list(sections) == ['Tutorial', 'Engineering']
    assert [Path(p).stem for p in sections['Tutorial']] == TUTORIAL
    in_order = [p for part in sections.values() for p in part]
    assert in_order == sorted(in_order), "the file numbering must follow the reading order"
    assert sorted(in_order + ['index.ipynb']) == sorted(p.name for p in NOTEBOOKS), "every notebook has its place"
