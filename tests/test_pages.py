"""The pages are published as committed: their outputs must not carry this machine's paths, errors, stderr, float noise
or raw show_doc markup; and a tutorial page must read on its own: every name its visible code uses comes from its
visible code, its first import cell imports no engineering module, its code lines fit in 100 characters, and it has
no show_doc cells."""
import ast
import builtins
import os
import re
import tempfile
from pathlib import Path

import nbformat
import pytest

from fashion_nb.core import project_root
from test_layers import ENGINE, package_imports  # the layers' one list of engine modules, and its import scan

ROOT = project_root()
NOTEBOOKS = sorted((ROOT/'nbs').glob('[!_]*.ipynb'))
TUTORIAL = ['00_data', '01_model', '02_training', '03_inference', '04_confusion', '05_end_to_end', '06_beyond', '07_faster']
ENGINEERING = ENGINE | {'core'}  # what a tutorial page's first import cell must not import
MAX_LINE = 100  # characters in a line of visible code
SHOW_DOC_MARKUP = '{target="_blank"'  # what show_doc writes; Jupyter and GitHub show it as raw text
ALWAYS_THERE = set(dir(builtins)) | {'__name__', '__file__', 'display', 'get_ipython'}  # names no cell defines


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
            if SHOW_DOC_MARKUP in text: found.append(f"{where}: raw show_doc markup {SHOW_DOC_MARKUP}...}}")
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
        out('execute_result', data={'text/markdown': '[source](https://x/data.py#L9){target="_blank"}'}, execution_count=1),
    ])]
    found = problems(nb)
    for expected in ('stderr output', 'KeyboardInterrupt', f"machine path '{str(ROOT).rstrip('/')}/'", "'/tmp/'",
                     'unrounded number', 'an error (ValueError)', 'Traceback', 'raw show_doc markup'):
        assert any(expected in line for line in found), (expected, found)


def is_hidden(cell) -> bool:
    "A cell the docs site does not show: it has a `#| hide` or `#| include: false` line."
    return bool(re.search(r'^\s*#\|\s*(hide|include:\s*false)\s*$', cell.source, re.MULTILINE))


def visible_code(nb) -> list[tuple[int, str]]:
    "The index and source of each code cell a reader sees (`#| export` cells included)."
    return [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == 'code' and not is_hidden(c)]


def python_of(source: str) -> str:
    "A cell's source without its IPython lines (`%magic`, `!shell`, `name?`), so that `ast` can parse it."
    return '\n'.join('' if l.lstrip().startswith(('%', '!')) or l.rstrip().endswith('?') else l
                     for l in source.splitlines())


def bound_names(tree: ast.AST) -> set[str]:
    "Every name a piece of code binds, in any scope: imports, assignments, loop/with/except targets, defs, arguments."
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load): bound.add(node.id)
        elif isinstance(node, ast.alias): bound.add(node.asname or node.name.split('.')[0])
        elif isinstance(node, ast.arg): bound.add(node.arg)
        elif isinstance(node, (ast.Global, ast.Nonlocal)): bound.update(node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.ExceptHandler,
                               ast.MatchAs, ast.MatchStar)) and node.name: bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest: bound.add(node.rest)
    return bound


def unbound_names(nb) -> list[str]:
    "Names the visible code uses that no visible cell imports or defines, each at its first use."
    trees, found = {}, []
    for i, source in visible_code(nb):
        try: trees[i] = ast.parse(python_of(source))
        except SyntaxError as e: found.append(f"cell {i}: cannot be parsed ({e.msg}, line {e.lineno})")
    bound = set().union(*map(bound_names, trees.values())) | ALWAYS_THERE
    first_use = {}
    for i, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in bound:
                first_use.setdefault(node.id, i)
    return found + [f"cell {i}: `{name}` is used but no visible cell imports or defines it"
                    for name, i in sorted(first_use.items(), key=lambda kv: (kv[1], kv[0]))]


def engineering_imports(nb) -> list[str]:
    "No engineering import in a tutorial page's first cell: the first visible cell after `#| default_exp` to import fashion_nb."
    start = next((i for i, c in enumerate(nb.cells) if re.search(r'^#\|\s*default_exp\b', c.source, re.M)), -1)
    for i, source in visible_code(nb):
        if i <= start: continue
        try: modules = package_imports(python_of(source))
        except SyntaxError: continue  # unbound_names reports it
        if modules:
            return [f"cell {i}: the first import cell imports the engineering module fashion_nb.{m}"
                    for m in sorted(modules & ENGINEERING)]
    return []


def long_lines(nb) -> list[str]:
    "Lines of visible code longer than MAX_LINE characters."
    return [f"cell {i} line {n}: {len(line)} characters" for i, source in visible_code(nb)
            for n, line in enumerate(source.splitlines(), 1) if len(line) > MAX_LINE]


def show_doc_cells(nb) -> list[str]:
    "Explicit `show_doc(...)` cells: nbdev's docs build documents the exported functions itself."
    return [f"cell {i}: calls show_doc" for i, c in enumerate(nb.cells) if c.cell_type == 'code' and 'show_doc(' in c.source]


def tutorial_page(name: str):
    return nbformat.read(ROOT/'nbs'/f'{name}.ipynb', as_version=4)


@pytest.mark.parametrize('name', TUTORIAL)
def test_tutorial_page_stands_alone(name):
    nb = tutorial_page(name)
    found = unbound_names(nb) + engineering_imports(nb)
    assert not found, '\n'.join(found)


@pytest.mark.parametrize('name', TUTORIAL)
def test_tutorial_code_lines_fit(name):
    found = long_lines(tutorial_page(name))
    assert not found, '\n'.join(found)


@pytest.mark.parametrize('name', TUTORIAL)
def test_tutorial_page_has_no_show_doc_cells(name):
    found = show_doc_cells(tutorial_page(name))
    assert not found, '\n'.join(found)


def test_the_page_checks_find_each_kind_of_problem():
    "The checks above can fail, and they read only what a reader sees: hidden cells and IPython lines are left out."
    code = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.cells = [code('#| default_exp demo'),
                code('#| hide\nimport matplotlib.pyplot as plt\nfrom fashion_nb.core import project_root\n' + 'x' * 120),
                code('#| export\nimport torch\nfrom fashion_nb.data import load_split\nfrom fashion_nb.run import run_end_to_end'),
                code('%matplotlib inline\n!ls\nload_split?\nfor i, (a, *b) in enumerate([]): pass\n'
                     'def f(n, *args, k=1, **kw): return [m for m in range(n) if (w := m)] + [lambda q: q]\n'
                     'try: pass\nexcept ValueError as e: print(e)\nwith open(__file__) as fh: display(fh)'),
                code("fig = plt.figure()\nplt.imshow(torch.zeros(2, 2))\nundefined_thing(" + repr('y' * 100) + ')'),
                code('show_doc(load_split)')]
    assert unbound_names(nb) == ["cell 4: `plt` is used but no visible cell imports or defines it",
                                 "cell 4: `undefined_thing` is used but no visible cell imports or defines it",
                                 "cell 5: `show_doc` is used but no visible cell imports or defines it"]
    assert engineering_imports(nb) == ["cell 2: the first import cell imports the engineering module fashion_nb.run"]
    assert long_lines(nb) == ["cell 4 line 3: 119 characters"]
    assert show_doc_cells(nb) == ["cell 5: calls show_doc"]
    nb.cells[1].source = nb.cells[1].source.replace('#| hide', '#| include: false')
    assert len(unbound_names(nb)) == 3 and len(long_lines(nb)) == 1


def test_every_tutorial_page_shows_a_figure_from_a_real_run():
    for name in TUTORIAL:
        nb = tutorial_page(name)
        shown = [o for c in nb.cells if c.cell_type == 'code' and not is_hidden(c)
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
