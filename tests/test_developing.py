"The developer page's parameter table, as committed, is the end-to-end notebook's parameters: none missing, none extra, none renamed."
import re

import nbformat

from fashion_nb.core import project_root
from fashion_nb.run import notebook_parameters

ROOT = project_root()
PAGE = ROOT/'nbs'/'17_developing.ipynb'
END_TO_END = ROOT/'nbs'/'05_end_to_end.ipynb'
HEADER = '| parameter | type | default | what it sets |'
ROW = re.compile(r'^\| `(\w+)` \| (\w+) \| `(.*)` \| (.*) \|$')


def shown_parameters(page=PAGE) -> list[tuple[str, str, str, str]]:
    "The rows of the parameter table the page shows, from its committed outputs: name, type, default, text."
    nb = nbformat.read(page, as_version=4)
    tables = [o.data['text/markdown'] for c in nb.cells if c.cell_type == 'code' for o in c.outputs
              if o.get('data', {}).get('text/markdown', '').startswith(HEADER)]
    assert len(tables) == 1, f"{page.name} shows {len(tables)} parameter tables; run scripts/refresh_pages.py on it"
    lines = tables[0].splitlines()[2:]
    rows = [ROW.match(line) for line in lines]
    assert all(rows), [line for line, row in zip(lines, rows) if not row]
    return [row.groups() for row in rows]


def declared_parameters(notebook=END_TO_END) -> list[tuple[str, str, str, str]]:
    "The parameters the notebook's `parameters` cell declares, in its order: name, type, default, comment."
    return [(name, p['inferred_type_name'], p['default'], p['help']) for name, p in notebook_parameters(notebook).items()]


def test_the_page_shows_the_notebooks_parameters():
    assert shown_parameters() == declared_parameters()


def test_the_check_fails_when_a_parameter_is_missing_extra_or_renamed(tmp_path):
    "The check above can fail: the page against copies of the notebook with one parameter renamed, removed or added."
    nb = nbformat.read(END_TO_END, as_version=4)
    cell = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
    source = cell.source
    edits = {'renamed': source.replace('max_shift: int', 'shift: int'),
             'missing': '\n'.join(l for l in source.splitlines() if not l.startswith('precision:')),
             'extra': source + '\nwidth: int = 6  # channels of the first convolution',
             'new default': source.replace('epochs: int = 1', 'epochs: int = 2')}
    for what, edited in edits.items():
        assert edited != source, what
        cell.source = edited
        copy = tmp_path/f'{what}.ipynb'
        nbformat.write(nb, copy)
        assert shown_parameters() != declared_parameters(copy), what
