"""Copy the outputs of `make demo`'s executed notebook into nbs/90_end_to_end.ipynb.

The end-to-end page shows a real run at the tutorial's settings, while the notebook's own parameter
defaults stay the quick ones that nbdev-test uses. papermill's executed copy has one extra cell (the
injected parameters); every other cell must match the source cell for cell, or nothing is written.

    .venv/bin/python scripts/store_demo_outputs.py [runs/demo/end_to_end.ipynb]
"""
import sys
from pathlib import Path

import nbformat
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

from fashion_nb.core import atomic_path

root = Path(__file__).resolve().parent.parent
source_path = root/'nbs'/'90_end_to_end.ipynb'
executed_path = Path(sys.argv[1]) if len(sys.argv) > 1 else root/'runs'/'demo'/'end_to_end.ipynb'
source = nbformat.read(source_path, as_version=4)
executed = nbformat.read(executed_path, as_version=4)
ran = [c for c in executed.cells if 'injected-parameters' not in c.metadata.get('tags', [])]
if [c.source for c in ran] != [c.source for c in source.cells]:
    sys.exit(f"{executed_path} was run from another version of {source_path.name}; run `make demo` again")
errors = [o for c in ran if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
if errors: sys.exit(f"{executed_path} holds an error ({errors[0].ename}); fix the run first")
for mine, theirs in zip(source.cells, ran):
    if mine.cell_type == 'code':
        mine.outputs, mine.execution_count = theirs.outputs, theirs.execution_count
source, _ = CoalesceStreamsPreprocessor().preprocess(source, {})  # progress bars: keep each bar's last state
with atomic_path(source_path) as tmp: nbformat.write(source, str(tmp))
print(f"outputs of {executed_path} stored in {source_path}; run nbdev-clean before committing")
