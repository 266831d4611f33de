"""Every tutorial page trains only on pictures it does not score as held out.

Each tutorial page runs here, in this process, as nbdev-test runs it (its hidden cells too), with its batches watched:
every batch a `DataLoader` or `FashionSplit.batches` hands out, and every picture a module sees while training, is
named by its place in Fashion-MNIST (split and index), and it counts as trained on when an optimizer whose parameters
ran forward on it takes a step before the next batch is drawn. What a page holds out is named the same way: the test
split, what `holdout` puts aside, and what `fit` and `evaluate` (the lesson's and the engine's) are given to measure.
A page fails when one picture is in both, beyond the data set's own byte-identical pictures (`KNOWN_DUPLICATES`)."""
import functools
import inspect
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
from execnb.shell import CaptureShell
from fastcore.foundation import working_directory
from fastcore.nbio import mk_cell, new_nb, read_nb
from nbdev.process import NBProcessor
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader

import fashion_nb.data
import fashion_nb.engine
import fashion_nb.training
from fashion_nb.core import project_root
from fashion_nb.data import FashionSplit, load_split
from test_pages import TUTORIAL

NBS = project_root()/'nbs'
SKIP_FLAGS = {'notest', 'slow'}  # the cells nbdev-test leaves out (tst_flags in pyproject.toml)
# Byte-identical pictures among Fashion-MNIST's 70,000, as groups of (split, index); measured: there are none, so a
# picture's bytes name exactly one picture, and a picture shared by a training batch and a held-out set is a leak.
KNOWN_DUPLICATES: list[list[tuple[str, int]]] = []
# Smaller runs where a page takes parameters: the end-to-end notebook also holds images out this way (val_size).
PARAMETERS = {'05_end_to_end': "limit = 1000\nval_size = 1000\nquiet = True\n"}


@pytest.fixture(scope='module')
def catalogue(real_data_available) -> dict:
    "Each picture's bytes, mapped to every (split, index) that holds them."
    names = defaultdict(list)
    for split in ('train', 'test'):
        for i, row in enumerate(load_split(split, download=False).images.reshape(-1, 784).numpy()):
            names[row.tobytes()].append((split, i))
    return names


def test_the_data_set_has_only_the_known_duplicates(catalogue):
    "The allowance below is exactly the data set's own duplicate pictures, by index."
    groups = [group for group in catalogue.values() if len(group) > 1]
    assert groups == KNOWN_DUPLICATES, f"{len(groups)} groups of identical pictures, first {groups[:3]}"


class Watch:
    "What a run trains on and what it holds out, each picture named by its (split, index)."
    def __init__(self, catalogue: dict):
        self.catalogue = catalogue
        self.trained, self.unknown = set(), 0  # pictures stepped on; and steps on pictures not in the data set
        self.held_out = {}  # a name for each held-out set -> its pictures
        self.drawn = set()  # the pictures of the last batch drawn
        self.seen, self.seen_by = set(), set()  # pictures that went forward in training since, and the parameters
        self.last_input = None
        self.paused = False
        self.held_out['the test split'] = {n for names in catalogue.values() for n in names if n[0] == 'test'}

    def names(self, images: torch.Tensor) -> list:
        "The (split, index) of each picture of a batch, or None for a picture not in the data set."
        x = images.detach().cpu()
        if x.dtype.is_floating_point: x = (x * 255).round().clamp(0, 255).to(torch.uint8)
        if x.dtype != torch.uint8: return [None] * len(x)
        return [self.catalogue.get(row.tobytes(), [None])[0] for row in x.reshape(len(x), -1).numpy()]

    @staticmethod
    def pictures(x) -> bool:
        return isinstance(x, torch.Tensor) and x.dim() in (3, 4) and tuple(x.shape[-2:]) == (28, 28)

    def hold_out(self, name: str, images: torch.Tensor):
        self.held_out.setdefault(name, set()).update(n for n in self.names(images) if n is not None)

    def batches(self, iterator):
        "`iterator`'s batches, each one noted as the last drawn."
        for batch in iterator:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            if not self.paused and self.pictures(images):
                self.drawn, self.seen, self.seen_by, self.last_input = set(self.names(images)), set(), set(), None
            yield batch

    def before_forward(self, module, args):
        "A module about to run in training: its parameters, and the pictures it gets if it gets pictures."
        if self.paused or not (module.training and torch.is_grad_enabled()): return
        self.seen_by |= {id(p) for p in module.parameters()}
        x = args[0] if args else None
        if self.pictures(x) and x is not self.last_input:
            self.seen |= set(self.names(x))
            self.last_input = x

    def after_step(self, optimizer, args, kwargs):
        "An optimizer's step trains on the last batch drawn, if its parameters went forward since."
        if self.paused or not {id(p) for g in optimizer.param_groups for p in g['params']} & self.seen_by: return
        stepped = self.drawn | self.seen
        self.unknown += None in stepped
        self.trained |= stepped - {None}
        self.seen, self.seen_by = set(), set()

    def leaks(self) -> dict:
        "Each held-out set's pictures that were also trained on, less the data set's own duplicates."
        allowed = {n for group in KNOWN_DUPLICATES for n in group}
        return {name: sorted(self.trained & pictures - allowed) for name, pictures in self.held_out.items()
                if self.trained & pictures - allowed}

    def summary(self) -> str:
        by_split = {s: sum(1 for n in self.trained if n[0] == s) for s in ('train', 'test')}
        trained = (f"trained on {by_split['train']:,} training and {by_split['test']:,} test pictures"
                   if self.trained else "trained on nothing")
        if self.unknown: trained += f" (and, in {self.unknown:,} steps, pictures changed or not from the data set)"
        held_out = ', '.join(f"{name} ({len(pictures):,})" for name, pictures in self.held_out.items())
        return f"{trained}; held out: {held_out}; in both: {sum(map(len, self.leaks().values()))}"


def watched(monkeypatch, watch: Watch):
    "Patch the loaders, the splits' batches, holdout and the four fit/evaluate functions so that `watch` sees them."
    iterate = DataLoader.__iter__
    monkeypatch.setattr(DataLoader, '__iter__', lambda loader: watch.batches(iterate(loader)))
    batches = FashionSplit.batches
    monkeypatch.setattr(FashionSplit, 'batches', lambda split, *a, **k: watch.batches(batches(split, *a, **k)))
    holdout = fashion_nb.data.holdout
    def watched_holdout(*args, **kwargs):
        rest, aside = holdout(*args, **kwargs)
        watch.hold_out('holdout', aside.images)
        return rest, aside
    monkeypatch.setattr(fashion_nb.data, 'holdout', watched_holdout)

    def loader_images(loader) -> torch.Tensor | None:
        "The pictures of a held-out loader, drawn without touching the random generators the page goes on with."
        if not isinstance(loader, DataLoader): return None
        watch.paused = True
        try:
            with torch.random.fork_rng(devices=[]): return torch.cat([x for x, *_ in iterate(loader)])
        finally: watch.paused = False

    def measuring(module, name: str, argument: str, images):
        "`module.name`, noting what it gets as `argument` as a held-out set."
        fn = getattr(module, name)
        signature = inspect.signature(fn)
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            given = signature.bind(*args, **kwargs).arguments.get(argument)
            if given is not None and (pictures := images(given)) is not None:
                watch.hold_out(f"{module.__name__}.{name}'s {argument}", pictures)
            return fn(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)
    measuring(fashion_nb.engine, 'fit', 'valid', lambda split: split.images)
    measuring(fashion_nb.engine, 'evaluate', 'split', lambda split: split.images)
    measuring(fashion_nb.training, 'fit', 'valid_dl', loader_images)
    measuring(fashion_nb.training, 'evaluate', 'loader', loader_images)
    forward = torch.nn.modules.module.register_module_forward_pre_hook(watch.before_forward)
    step = register_optimizer_step_post_hook(watch.after_step)
    return forward, step


def run_watched(nb, folder: Path, catalogue: dict, parameters: str | None = None) -> Watch:
    "Run notebook `nb` in `folder` as nbdev-test would, on one torch thread, and return what it trained on and held out."
    nb = NBProcessor(nb=nb, rm_directives=False, process=True).nb
    if parameters is not None:  # papermill's place: right after the cell tagged `parameters`
        at = next(i for i, c in enumerate(nb.cells) if 'parameters' in c.get('metadata', {}).get('tags', []))
        nb.cells.insert(at + 1, mk_cell(parameters))
        nb.cells[at + 1].directives_ = {}
    def skipped(cell): return cell.cell_type != 'code' or bool(SKIP_FLAGS & set(cell.get('directives_') or {}))
    watch = Watch(catalogue)
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as monkeypatch:
        hooks = watched(monkeypatch, watch)
        monkeypatch.setenv('IN_TEST', '1')
        torch.set_num_threads(1)  # two threads on two shared cores spend most of their time waiting for each other
        try:
            with working_directory(folder): CaptureShell().run_all(nb, exc_stop=True, preproc=skipped)
        finally:
            for hook in hooks: hook.remove()
            torch.set_num_threads(threads)
            plt.close('all')
    return watch


@pytest.mark.parametrize('name', TUTORIAL)
def test_page_trains_on_nothing_it_holds_out(name, catalogue):
    watch = run_watched(read_nb(NBS/f'{name}.ipynb'), NBS, catalogue, PARAMETERS.get(name))
    print(f"{name}: {watch.summary()}")
    leaks = watch.leaks()
    assert not leaks, (f"{name} trains on pictures it holds out: " +
                       '; '.join(f"{len(found):,} of {held}, first {found[:3]}" for held, found in leaks.items()))


LEAKY = [  # a page's ways to train, each on the first 300 of all 60,000 pictures, 10,000 of them held out
    """torch.manual_seed(0)
network = Network()
optimizer = optim.Adam(network.parameters(), lr=0.01)
for images, labels in DataLoader(Subset(everything, range(300)), batch_size=100, shuffle=True):
    loss = F.cross_entropy(network(images), labels)
    optimizer.zero_grad(); loss.backward(); optimizer.step()""",
    """network = Network()
loader = DataLoader(TensorDataset(to_float(everything.images[:300]), everything.labels[:300]), batch_size=100)
fit(1, network, F.cross_entropy, optim.Adam(network.parameters(), lr=0.01), loader)""",
    "engine_fit(FastNetwork(), everything.head(300), epochs=1, quiet=True, device='cpu')",
    """network = Network()
optimizer = optim.Adam(network.parameters(), lr=0.01)
loss = F.cross_entropy(network(to_float(everything.images[:300])), everything.labels[:300])
loss.backward(); optimizer.step()""",
]
SETUP = """import torch
import torch.nn.functional as F
from torch import optim
from torch.utils.data import DataLoader, Subset, TensorDataset
from fashion_nb.data import holdout, load_split, to_float
from fashion_nb.engine import fit as engine_fit
from fashion_nb.fast_network import FastNetwork
from fashion_nb.model import Network
from fashion_nb.training import fit
everything = load_split('train', download=False)
train, held_out = holdout(everything, 10000)"""


@pytest.mark.parametrize('way', range(len(LEAKY)), ids=['loop', 'lesson fit', 'engine fit', 'no loader'])
def test_the_watch_sees_a_leak(way, catalogue, tmp_path):
    "Trained on the first 300 of all 60,000, a page leaks about 50 held-out pictures; from `train`, none."
    leaky = run_watched(new_nb([mk_cell(SETUP), mk_cell(LEAKY[way])]), tmp_path, catalogue)
    assert len(leaky.trained) == 300, leaky.summary()
    (held, found), = leaky.leaks().items()
    assert held == 'holdout' and 20 < len(found) < 100, (held, len(found))
    clean = LEAKY[way].replace('everything', 'train')
    watch = run_watched(new_nb([mk_cell(SETUP), mk_cell(clean)]), tmp_path, catalogue)
    assert len(watch.trained) == 300 and watch.leaks() == {}, watch.summary()


def test_a_held_out_set_given_to_fit_counts(catalogue, tmp_path):
    "Measuring during training on pictures the page also trains on is a leak, whatever `holdout` said."
    code = """valid = DataLoader(TensorDataset(to_float(train.images[:200]), train.labels[:200]), batch_size=100)
network = Network()
loader = DataLoader(TensorDataset(to_float(train.images[:300]), train.labels[:300]), batch_size=100)
fit(1, network, F.cross_entropy, optim.Adam(network.parameters(), lr=0.01), loader, valid)"""
    watch = run_watched(new_nb([mk_cell(SETUP), mk_cell(code)]), tmp_path, catalogue)
    leaks = {held: len(found) for held, found in watch.leaks().items()}
    assert leaks == {"fashion_nb.training.fit's valid_dl": 200, "fashion_nb.training.evaluate's loader": 200}, leaks
