"""Write README.md from nbs/index.ipynb's prose, for machines without Quarto (where nbdev-readme cannot run).

The README is the home page without its figure: the index's markdown cells in order, less the figure's caption
(the markdown cell right before a code cell that shows on the page).
    .venv/bin/python scripts/readme_from_index.py
"""
from pathlib import Path

import nbformat

from fashion_nb.core import atomic_path

root = Path(__file__).resolve().parent.parent
index = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
cells = index.cells

def shown_code(cell): return cell is not None and cell.cell_type == 'code' and not cell.source.startswith('#| hide')

prose = [c.source for c, following in zip(cells, cells[1:] + [None]) if c.cell_type == 'markdown' and not shown_code(following)]
with atomic_path(root/'README.md') as tmp: tmp.write_text('\n\n'.join(prose) + '\n')
print('README.md written from nbs/index.ipynb')
