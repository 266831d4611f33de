"""The package's two layers, read from its source: lessons import only the foundations and each other, the engine
imports the lessons, and no lesson module imports an engine module, not even inside a function."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent/'fashion_nb'
FOUNDATIONS = {'core', 'datafiles'}
LESSONS = {'data', 'model', 'training', 'inference', 'confusion', 'beyond', 'faster'}
ENGINE = {'fast_network', 'engine', 'checkpoint', 'fused', 'params', 'fingerprint', 'run', 'grid', 'resume', 'sizing', 'worker', 'cluster', 'report', 'batch', 'cli', 'predict', 'tensorboard'}


def package_imports(source: str) -> set[str]:
    "The fashion_nb modules a module's source imports, anywhere in it: `from .x import`, `from fashion_nb.x import`, `import fashion_nb.x`."
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module: found.add(node.module.split('.')[0])
            elif node.level == 1: found |= {alias.name for alias in node.names}  # from . import x
            elif node.module and node.module.startswith('fashion_nb.'): found.add(node.module.split('.')[1])
            elif node.module == 'fashion_nb': found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split('.')[1] for a in node.names if a.name.startswith('fashion_nb.')}
    return found - {'__version__'}


def modules() -> dict[str, str]:
    return {p.stem: p.read_text() for p in PACKAGE.glob('*.py') if p.stem not in ('__init__', '_modidx')}


def test_every_module_has_a_layer():
    assert set(modules()) == FOUNDATIONS | LESSONS | ENGINE, "a new module must be placed in a layer here"


@pytest.mark.parametrize('name', sorted(LESSONS))
def test_a_lesson_imports_no_engine_module(name):
    assert package_imports(modules()[name]) <= FOUNDATIONS | LESSONS


@pytest.mark.parametrize('name', sorted(FOUNDATIONS))
def test_a_foundation_imports_only_foundations(name):
    assert package_imports(modules()[name]) <= FOUNDATIONS


def test_the_engine_builds_on_the_lessons():
    assert {'model'} <= package_imports(modules()['fast_network'])
    assert {'data'} <= package_imports(modules()['engine'])
    assert {'engine', 'training', 'fast_network', 'model'} <= package_imports(modules()['checkpoint'])


def test_the_engine_does_not_import_its_checkpoints():
    "Checkpoints build on the engine's `fit`; the engine trains without knowing how its models are kept."
    assert 'checkpoint' not in package_imports(modules()['engine'])


def test_the_import_scan_sees_every_form():
    source = ("from .engine import fit\nimport fashion_nb.run\nfrom fashion_nb.batch import x\n"
              "def f():\n    from .fused import fused_layer\nfrom . import cli\nfrom fashion_nb import core\n")
    assert package_imports(source) == {'engine', 'run', 'batch', 'fused', 'cli', 'core'}
    assert package_imports("import torch\nfrom torch import nn\n") == set()
