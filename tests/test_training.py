"Seeded determinism and the checkpoint round trip, on a small real subset."
from pathlib import Path

import pytest
import torch

from fashion_nb.checkpoint import load_checkpoint, save_checkpoint
from fashion_nb.core import CheckpointError, DeviceError, NonFiniteLossError
from fashion_nb.data import CLASS_NAMES, load_split
from fashion_nb.engine import fit
from fashion_nb.fast_network import FastNetwork
from fashion_nb.model import Network
from fashion_nb.training import seed_everything


@pytest.fixture(scope='module')
def small_train():
    return load_split('train', download=False).head(1500)


def train_once(split, seed):
    seed_everything(seed)
    model = FastNetwork()  # what the engine's `fit` trains
    history = fit(model, split, epochs=2, batch_size=100, lr=0.01, seed=seed, device='cpu', quiet=True)
    return model, [{k: v for k, v in h.items() if k != 'seconds'} for h in history]


def test_same_seed_same_history_and_weights(small_train):
    (m1, h1), (m2, h2) = train_once(small_train, 7), train_once(small_train, 7)
    assert h1 == h2
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    _, other = train_once(small_train, 8)
    assert other != h1


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='PyTorch sees no CUDA device here'))])
def test_nan_loss_stops_with_epoch_and_batch(small_train, device):
    "The check runs on the device, read every 50 batches, and still names the first bad batch."
    seed_everything(0)
    model = FastNetwork()
    with torch.no_grad(): model.out.bias.fill_(float('nan'))
    with pytest.raises(NonFiniteLossError, match='at epoch 1, batch 1;'):
        fit(model, small_train, epochs=1, device=device, quiet=True)


def test_checkpoint_round_trip(tmp_path, small_train):
    model, history = train_once(small_train, 0)
    path = save_checkpoint(tmp_path/'model.pt', model, hparams={'lr': 0.01, 'epochs': 2}, metrics={'history': history})
    loaded, checkpoint = load_checkpoint(path)  # the lesson's `Network`, with the weights a `FastNetwork` learned
    assert type(loaded) is Network and type(load_checkpoint(path, network=FastNetwork)[0]) is FastNetwork
    x = torch.stack([small_train[i][0] for i in range(10)])
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    with torch.no_grad():  # trained channels-last, reloaded contiguous: the same weights, sums in another order
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)
    assert checkpoint['class_names'] == list(CLASS_NAMES)
    assert checkpoint['hparams'] == {'lr': 0.01, 'epochs': 2}
    assert checkpoint['metrics']['history'] == history
    assert set(checkpoint['versions']) >= {'python', 'torch', 'torchvision', 'fashion_nb'}


def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path/'model.pt', Network(), metrics={'run': 'first'})
    real_write = Path.write_bytes
    def crash(self, data): real_write(self, bytes(data)[:100]); raise OSError('disk full')  # half written, then full
    monkeypatch.setattr(Path, 'write_bytes', crash)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint(path, Network(), metrics={'run': 'second'})
    monkeypatch.undo()
    assert load_checkpoint(path)[1]['metrics'] == {'run': 'first'}
    assert [p.name for p in tmp_path.iterdir()] == ['model.pt']


def test_unreadable_checkpoint(tmp_path):
    (tmp_path/'bad.pt').write_bytes(b'\x80\x04not a checkpoint')
    with pytest.raises(CheckpointError, match='not a fashion_nb checkpoint'):
        load_checkpoint(tmp_path/'bad.pt')


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is here: loading onto it is allowed')
def test_a_missing_device_is_not_a_bad_checkpoint(tmp_path):
    "A good checkpoint asked onto CUDA on a machine without it: the device's one line, not the file's."
    path = save_checkpoint(tmp_path/'model.pt', Network())
    with pytest.raises(DeviceError) as info:
        load_checkpoint(path, 'cuda')
    assert not isinstance(info.value, CheckpointError) and 'CUDA is not available here' in str(info.value)


def test_a_checkpoint_carrying_a_pickled_callable_is_refused(tmp_path):
    "torch.load(weights_only=True): unpickling the function below would hand an attacker a call."
    marker = tmp_path/'ran'
    class Trap:
        def __reduce__(self): return (Path.touch, (marker,))
    path = save_checkpoint(tmp_path/'model.pt', Network())
    checkpoint = torch.load(path, weights_only=True)
    torch.save({**checkpoint, 'hparams': {'trap': Trap()}}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"{path}: not a fashion_nb checkpoint (UnpicklingError); train and save it again"
    assert not marker.exists()
