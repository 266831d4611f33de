"""Write README.md from nbs/index.ipynb, for machines without Quarto (where nbdev-readme cannot run).

The README is the home page as plain markdown: the index's markdown cells in order, and the markdown that its
shown code cells print (the headline result). A figure the README cannot carry is left out with its caption (the
markdown cell right before it); the headline's figure is linked from the copy that `make pages` keeps in nbs/images/.
Links to other pages point into nbs/, where the README, at the top of the repository, finds them.
    .venv/bin/python scripts/readme_from_index.py
"""
import re
from pathlib import Path

import nbformat

from fashion_nb.core import atomic_path

root = Path(__file__).resolve().parent.parent
HEADLINE_IMAGE = 'nbs/images/demo_confusion_matrix.png'  # written by scripts/refresh_pages.py
index = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
cells = index.cells

def shown_code(cell): return cell is not None and cell.cell_type == 'code' and not cell.source.startswith('#| hide')
def into_nbs(markdown): return re.sub(r'\]\((?![a-z]+:|#|/)([^)\s]+\.ipynb)', r'](nbs/\1', markdown)  # page links, from the top
def printed_markdown(cell): return [o.data['text/markdown'] for o in cell.outputs if 'text/markdown' in o.get('data', {})]

parts = []
for cell, following in zip(cells, cells[1:] + [None]):
    if cell.cell_type == 'markdown':
        if not shown_code(following) or printed_markdown(following): parts.append(into_nbs(cell.source))
    elif shown_code(cell) and printed_markdown(cell):
        parts += printed_markdown(cell)
        if any('image/png' in o.get('data', {}) for o in cell.outputs) and (root/HEADLINE_IMAGE).is_file():
            parts.append(f"![The demo model's confusion matrix on the test split]({HEADLINE_IMAGE})")
with atomic_path(root/'README.md') as tmp: tmp.write_text('\n\n'.join(parts) + '\n')
print('README.md written from nbs/index.ipynb')
