"The developer page's parameter table, as committed, is the table of parameters: none missing, none extra, none renamed, none changed."
import dataclasses
import re

import nbformat

from fashion_nb.core import project_root
from fashion_nb.params import PARAMETERS

ROOT = project_root()
PAGE = ROOT/'nbs'/'17_developing.ipynb'
HEADER = '| parameter | type | default | allowed | what it sets |'
ROW = re.compile(r'^\| `(\w+)` \| (\w+) \| `(.*)` \| (.*) \| (.*) \|$')


def shown_parameters(page=PAGE) -> list[tuple[str, str, str, str, str]]:
    "The rows of the parameter table the page shows, from its committed outputs: name, type, default, allowed values, text."
    nb = nbformat.read(page, as_version=4)
    tables = [o.data['text/markdown'] for c in nb.cells if c.cell_type == 'code' for o in c.outputs
              if o.get('data', {}).get('text/markdown', '').startswith(HEADER)]
    assert len(tables) == 1, f"{page.name} shows {len(tables)} parameter tables; run scripts/refresh_pages.py on it"
    lines = tables[0].splitlines()[2:]
    rows = [ROW.match(line) for line in lines]
    assert all(rows), [line for line, row in zip(lines, rows) if not row]
    return [row.groups() for row in rows]


def table_rows(table=PARAMETERS) -> list[tuple[str, str, str, str, str]]:
    "The table of parameters, in its order (the notebook's), as the page's rows: name, type, default, allowed values, help."
    return [(p.name, p.kind.__name__, repr(p.default), p.allowed(), p.help) for p in table.values()]


def test_the_page_shows_the_table_of_parameters():
    assert shown_parameters() == table_rows()


def test_the_check_fails_when_a_parameter_is_missing_extra_renamed_or_changed():
    "The check above can fail: the page against copies of the table with one parameter renamed, removed, added or changed."
    def edited(change) -> dict:
        table = dict(PARAMETERS)
        change(table)
        return table
    first = next(iter(PARAMETERS.values()))
    edits = {'renamed': lambda t: t.update(max_shift=dataclasses.replace(t['max_shift'], name='shift')),
             'missing': lambda t: t.pop('precision'),
             'extra': lambda t: t.update(width=dataclasses.replace(first, name='width')),
             'new default': lambda t: t.update(epochs=dataclasses.replace(t['epochs'], default=2)),
             'new bound': lambda t: t.update(max_shift=dataclasses.replace(t['max_shift'], high=12)),
             'new help': lambda t: t.update(lr=dataclasses.replace(t['lr'], help='the learning rate'))}
    for what, change in edits.items():
        assert shown_parameters() != table_rows(edited(change)), what
