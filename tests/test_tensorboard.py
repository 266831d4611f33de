"""What `write_run` leaves for TensorBoard, read back with TensorBoard's own readers: a small run (the tutorial's network,
a validation split) and a small batch of two runs (the tutorial's network at a constant rate, the better one with a
one-cycle rate): a scalar point an epoch for each curve, one HParams entry a run, the grid of predictions, a
precision-recall curve a class and the projector's files; and, without tensorboard, one line saying what to install.
The dev extra installs tensorboard: without it these tests fail, as they should, rather than skip."""
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from fashion_nb.beyond import BetterNetwork, one_cycle
from fashion_nb.data import CLASS_NAMES, holdout, load_split
from fashion_nb.engine import fit
from fashion_nb.fast_network import FastNetwork
from fashion_nb.inference import accuracy, get_all_preds
from fashion_nb.tensorboard import TensorBoardMissing, check_tensorboard, epoch_rates, write_run
from fashion_nb.training import seed_everything

SAMPLE = 120  # pictures in the projector: few, for speed
EVERYTHING = {'scalars': 0, 'images': 0, 'tensors': 0}  # size_guidance: keep every point, not a sample


def small_run(log_dir: Path, network, train, valid, test, grid: int = 24, **recipe) -> dict:
    "Train `network` briefly, score `test`, write the run into `log_dir`; return what was written."
    params = {'model': recipe.pop('model'), 'epochs': 2, 'batch_size': 100, 'lr': recipe.pop('lr'), 'seed': 0,
              'schedule': recipe.pop('schedule_name'), 'augment': False, 'limit': len(train),
              'val_size': len(valid) if valid is not None else 0, 'device': 'cpu', 'out_dir': str(log_dir), 'quiet': True}
    seed_everything(0)
    history = fit(network, train, epochs=params['epochs'], batch_size=params['batch_size'], lr=params['lr'],
                  device='cpu', quiet=True, valid=valid, **recipe)
    logits = get_all_preds(network, test)
    metrics = {'train_images': len(train), 'test_accuracy': accuracy(logits, test.labels),
               'train_accuracy': accuracy(get_all_preds(network, train), train.labels),
               'val_accuracy': history[-1]['valid_accuracy'] if valid is not None else None,
               'val_loss': history[-1]['valid_loss'] if valid is not None else None}
    write_run(log_dir, params, history, network, test, logits, metrics, sample=SAMPLE, grid=grid)
    return {'params': params, 'history': history, 'metrics': metrics, 'network': network}


@pytest.fixture(scope='module')
def data(real_data_available):
    pool, valid = holdout(load_split('train', download=False), 200)
    return pool.head(400), valid, load_split('test', download=False).head(1000)


@pytest.fixture(scope='module')
def run(tmp_path_factory, data):
    train, valid, test = data
    log_dir = tmp_path_factory.mktemp('tb')/'single'
    written = small_run(log_dir, FastNetwork(), train, valid, test, model='tutorial', lr=0.01, schedule_name='constant')
    events = EventAccumulator(str(log_dir), size_guidance=EVERYTHING)
    events.Reload()
    return {**written, 'dir': log_dir, 'events': events}


@pytest.fixture(scope='module')
def batch(tmp_path_factory, data):
    "Two runs of a batch, each in <DIR>/<run name>, neither with a validation split."
    train, _, test = data
    train, test = train.head(300), test.head(500)  # 3 optimizer steps an epoch
    root = tmp_path_factory.mktemp('tb')/'batch'
    runs = {'tutorial-lr0.01': small_run(root/'tutorial-lr0.01', FastNetwork(), train, None, test,
                                         model='tutorial', lr=0.01, schedule_name='constant', grid=4),
            'better-one-cycle': small_run(root/'better-one-cycle', BetterNetwork(), train, None, test,
                                          model='better', lr=0.005, schedule_name='one-cycle', schedule=one_cycle, grid=4)}
    return root, runs


def session_start(events) -> dict:
    "The settings of a run's HParams entry, by name, as Python values."
    content = events.PluginTagToContent('hparams')['_hparams_/session_start_info']
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    return {name: getattr(value, value.WhichOneof('kind')) for name, value in hparams.items()}


def test_a_scalar_point_an_epoch(run):
    events, history = run['events'], run['history']
    epochs = [h['epoch'] for h in history]
    expected = {'train/loss': 'mean_loss', 'train/accuracy': 'accuracy',
                'valid/loss': 'valid_loss', 'valid/accuracy': 'valid_accuracy'}
    for tag, key in expected.items():
        points = events.Scalars(tag)
        assert [p.step for p in points] == epochs, tag
        assert [p.value for p in points] == pytest.approx([h[key] for h in history], rel=1e-6), tag
    rates = events.Scalars('train/learning_rate')  # constant: lr at every epoch's end
    assert [p.step for p in rates] == epochs and [p.value for p in rates] == pytest.approx([0.01] * len(epochs))


def test_hparams_of_the_run(run):
    events = run['events']
    tags = events.PluginTagToContent('hparams')
    assert {'_hparams_/session_start_info', '_hparams_/session_end_info'} <= set(tags)
    settings = session_start(events)
    assert settings['lr'] == 0.01 and settings['model'] == 'tutorial' and settings['epochs'] == 2
    assert settings['augment'] == 'False'  # text: torch would write a bool as the number 0
    assert not {'out_dir', 'quiet'} & set(settings)
    for name in ('train_accuracy', 'val_accuracy', 'val_loss'):
        (point,) = events.Scalars(f'result/{name}')
        assert point.value == pytest.approx(run['metrics'][name], rel=1e-6) and point.step == 2
    # with a validation split the runs are compared on it: the test split is not among the results
    assert 'result/test_accuracy' not in events.Tags()['scalars']


def test_images_pr_curves_and_projector(run):
    events, log_dir = run['events'], run['dir']
    assert events.Tags()['images'] == ['test/predictions']
    (picture,) = events.Images('test/predictions')
    assert picture.encoded_image_string.startswith(b'\x89PNG') and picture.width > 200
    curves = events.PluginTagToContent('pr_curves')
    assert sorted(curves) == sorted(f'pr/{name}' for name in CLASS_NAMES)
    (curve,) = events.Tensors('pr/Trouser')
    assert curve.step == 2 and list(curve.tensor_proto.tensor_shape.dim)[0].size == 6  # TP, FP, TN, FN, precision, recall
    config = (log_dir/'projector_config.pbtxt').read_text()
    assert 'tensor_path: "00002/last_hidden_layer/tensors.tsv"' in config and 'sprite' in config
    rows = (log_dir/'00002'/'last_hidden_layer'/'tensors.tsv').read_text().splitlines()
    assert len(rows) == SAMPLE and len(rows[0].split('\t')) == 60  # the tutorial network's last hidden layer
    labels = (log_dir/'00002'/'last_hidden_layer'/'metadata.tsv').read_text().splitlines()
    assert labels[0] == 'true\tpredicted' and len(labels) == SAMPLE + 1
    assert {line.split('\t')[0] for line in labels[1:]} <= set(CLASS_NAMES)
    assert (log_dir/'00002'/'last_hidden_layer'/'sprite.png').read_bytes().startswith(b'\x89PNG')


def test_every_run_of_a_batch_is_one_hparams_entry(batch):
    root, runs = batch
    multiplexer = EventMultiplexer(size_guidance=EVERYTHING)
    multiplexer.AddRunsFromDirectory(str(root))  # as TensorBoard reads a --logdir
    multiplexer.Reload()
    entries = multiplexer.PluginRunToTagToContent('hparams')
    assert sorted(entries) == sorted(runs)
    for name, written in runs.items():
        assert '_hparams_/session_start_info' in entries[name]
        settings = session_start(multiplexer.GetAccumulator(name))
        assert (settings['model'], settings['lr']) == (written['params']['model'], written['params']['lr'])
        scalars = multiplexer.GetAccumulator(name).Tags()['scalars']
        assert 'result/test_accuracy' in scalars and not any(t.startswith('valid/') for t in scalars)  # no validation
    widths = {name: len((root/name/'00002'/'last_hidden_layer'/'tensors.tsv').read_text().split('\n', 1)[0].split('\t'))
              for name in runs}
    assert widths == {'tutorial-lr0.01': 60, 'better-one-cycle': 128}  # BetterNetwork's `hidden` layer


def test_the_one_cycle_rate_is_logged_as_fit_set_it(batch):
    root, runs = batch
    events = EventAccumulator(str(root/'better-one-cycle'))
    events.Reload()
    logged = [p.value for p in events.Scalars('train/learning_rate')]
    assert logged == pytest.approx(epoch_rates(0.005, 'one-cycle', 2, 3), rel=1e-6)
    assert logged[1] < logged[0] / 1000  # near its peak after the first epoch, almost 0 at the last batch


def test_a_rerun_replaces_the_files(run, data, tmp_path):
    _, _, test = data
    log_dir = tmp_path/'again'
    logits = get_all_preds(run['network'], test)
    for _ in range(2):
        write_run(log_dir, run['params'], run['history'], run['network'], test, logits, run['metrics'], sample=20, grid=4)
    assert len(list(log_dir.glob('events.out.tfevents.*'))) == 1
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert len(events.Scalars('train/loss')) == 2


def test_without_tensorboard_one_line_says_what_to_install(run, data, tmp_path):
    _, _, test = data
    log_dir = tmp_path/'never'
    with mock.patch.dict(sys.modules, {'tensorboard': None, 'torch.utils.tensorboard': None}):  # as if not installed
        with pytest.raises(TensorBoardMissing, match='pip install tensorboard'):
            check_tensorboard()  # what a run calls before it trains
        with pytest.raises(TensorBoardMissing) as caught:
            write_run(log_dir, run['params'], run['history'], run['network'], test,
                      torch.zeros(len(test), 10), run['metrics'])
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and 'pip install tensorboard' in message and 'fashion_nb[tensorboard]' in message
    assert caught.value.__cause__ is None and not log_dir.exists()
    assert isinstance(caught.value, ImportError)


def test_the_commands_write_tensorboard_files(tmp_path):
    "`fashion-nb run --tensorboard DIR` writes a run's files into DIR; `fashion-nb batch` one folder, and one HParams entry, a run."
    from fashion_nb.cli import main
    small = ['-p', 'limit', '300', '-p', 'val_size', '200', '-p', 'quiet', 'True', '--no-progress']
    assert main(['run', *small, '-p', 'epochs', '2', '--out', str(tmp_path/'run'), '--tensorboard', str(tmp_path/'tb')]) == 0
    events = EventAccumulator(str(tmp_path/'tb'), size_guidance=EVERYTHING).Reload()
    assert [p.step for p in events.Scalars('train/loss')] == [1, 2] and len(events.Scalars('valid/accuracy')) == 2
    assert events.Tags()['images'] == ['test/predictions'] and len(events.Tags()['tensors']) >= 10
    assert (tmp_path/'tb'/'projector_config.pbtxt').is_file()
    assert main(['batch', *small, '-p', 'lr', '0.005,0.01', '--workers', '1', '--out', str(tmp_path/'batch'),
                 '--tensorboard', str(tmp_path/'tbb')]) == 0
    runs = sorted(p.name for p in (tmp_path/'tbb').iterdir())
    assert len(runs) == 2 and runs == sorted(p.name for p in (tmp_path/'batch').iterdir() if p.is_dir())
    for run in runs:
        hparams = EventAccumulator(str(tmp_path/'tbb'/run)).Reload().PluginTagToContent('hparams')
        assert '_hparams_/session_start_info' in hparams, run
