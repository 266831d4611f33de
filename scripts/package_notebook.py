"""Put a copy of the end-to-end notebook into the package, without its outputs, so that a wheel can run it.

nbs/05_end_to_end.ipynb stays the source; `make export` and `make pages` call this after changing it, and
tests/test_nbdev.py checks that the copy has the same cells.
    .venv/bin/python scripts/package_notebook.py
"""
from pathlib import Path

import nbformat

from fashion_nb.core import atomic_path

root = Path(__file__).resolve().parent.parent
nb = nbformat.read(root/'nbs'/'05_end_to_end.ipynb', as_version=4)
for cell in nb.cells:
    if cell.cell_type == 'code': cell.outputs, cell.execution_count = [], None
with atomic_path(root/'fashion_nb'/'end_to_end.ipynb') as tmp: nbformat.write(nb, str(tmp))
print('fashion_nb/end_to_end.ipynb: the end-to-end notebook, without outputs')
