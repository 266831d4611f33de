"""The GPU path: device selection, an epoch that never waits for the GPU between reads of its sums, and the same
arithmetic as on the CPU. Skipped where PyTorch sees no CUDA device, as in CI; run on a machine that has one
(`make bench-gpu` runs these and every other test with `cuda` in its name, such as the non-finite loss on the GPU)."""
import warnings

import pytest
import torch

from fashion_nb.data import load_split
from fashion_nb.inference import get_all_preds
from fashion_nb.engine import adam, fit, pick_device, train_epoch
from fashion_nb.fast_network import FastNetwork
from fashion_nb.training import seed_everything

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='PyTorch sees no CUDA device here')


@pytest.fixture(scope='module')
def small_train():
    return load_split('train', download=False).head(2400)


def waits_for_the_gpu(work) -> int:
    "How many times `work()` made the CPU wait for the GPU (PyTorch's sync debug mode warns at each)."
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try: work()
        finally: torch.cuda.set_sync_debug_mode('default')
    return sum('synchroniz' in str(w.message) for w in caught)


def test_auto_picks_the_gpu():
    assert pick_device('auto').type == 'cuda'
    assert pick_device('cuda:0') == torch.device('cuda:0')


def test_counting_sees_every_wait():
    "The count below is only worth something if each wait is counted, not the first alone."
    values = torch.arange(6, device='cuda')
    assert waits_for_the_gpu(lambda: [v.item() for v in values]) >= 6
    assert waits_for_the_gpu(lambda: [torch.ones(2).to('cuda') for _ in range(6)]) >= 6  # copies from the CPU wait too


def test_shuffled_batches_are_made_on_the_gpu(small_train):
    data = small_train.to('cuda')
    generator = torch.Generator(device='cuda').manual_seed(0)
    batches = []
    assert waits_for_the_gpu(lambda: batches.extend(data.batches(100, shuffle=True, generator=generator))) == 0
    assert len(batches) == 24 and all(x.is_cuda and y.is_cuda for x, y in batches)
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(labels.sort().values, data.labels.sort().values)  # every image once


def test_an_epoch_waits_only_to_read_its_sums(small_train):
    "The waits do not grow with the number of batches: data, shuffling and running sums stay on the GPU."
    data = small_train.to('cuda')
    def epoch(n_images):
        model = FastNetwork().to('cuda', memory_format=torch.channels_last)
        generator = torch.Generator(device='cuda').manual_seed(0)
        batches = data.head(n_images).batches(100, shuffle=True, generator=generator)
        return lambda: train_epoch(model, batches, adam(model.parameters()), check_every=1000)
    waits = waits_for_the_gpu(epoch(1200)), waits_for_the_gpu(epoch(2400))
    assert waits[0] == waits[1] <= 5, waits  # the sums' three reads at the end, and making the NaN marker


def test_same_arithmetic_as_the_cpu(small_train):
    "From the same weights over the same batches, the GPU's losses and scores match the CPU's up to rounding."
    # loose bounds: cuDNN's convolutions round their inputs to TF32 by default, on both of the benchmark's paths
    seed_everything(0)
    weights = FastNetwork().state_dict()
    results = {}
    for device in ('cpu', 'cuda'):
        model = FastNetwork().to(device, memory_format=torch.channels_last)  # fused kernels on the CPU only
        model.load_state_dict(weights)
        stats = train_epoch(model, small_train.head(500).to(device).batches(100), adam(model.parameters()))
        results[device] = stats, get_all_preds(model, small_train.head(1000))
    (cpu_stats, cpu_scores), (gpu_stats, gpu_scores) = results['cpu'], results['cuda']
    assert cpu_stats['total_loss'] == pytest.approx(gpu_stats['total_loss'], rel=1e-2)
    assert abs(cpu_stats['correct'] - gpu_stats['correct']) <= 5
    assert torch.allclose(cpu_scores, gpu_scores, atol=5e-2), (cpu_scores - gpu_scores).abs().max()
    assert (cpu_scores.argmax(1) == gpu_scores.argmax(1)).float().mean() > 0.98


def test_fit_trains_on_the_gpu(small_train):
    seed_everything(0)
    model = FastNetwork()
    valid = load_split('test', download=False).head(500)
    history = fit(model, small_train, epochs=2, device='cuda', quiet=True, valid=valid)
    assert next(model.parameters()).is_cuda
    assert history[1]['mean_loss'] < history[0]['mean_loss'] and history[1]['valid_accuracy'] > 0.5
