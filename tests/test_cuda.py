"""The GPU path: device selection, an epoch that never waits for the GPU between reads of its sums, the same
arithmetic as on the CPU, and training steps replayed as CUDA graphs that reach the weights eager steps reach. Skipped where PyTorch sees no CUDA device, as in CI; run on a machine that has one
(`make bench-gpu` runs these and every other test with `cuda` in its name, such as the non-finite loss on the GPU)."""
import warnings

import pytest
import torch

from fashion_nb.data import load_split
from fashion_nb.inference import get_all_preds
from functools import partial

import torch.nn.functional as F

from fashion_nb.beyond import BetterNetwork, one_cycle, shift_and_flip
from fashion_nb.engine import CudaGraphStep, adam, fit, pick_device, train_epoch
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


def weights_after(train, graphs: bool, network=FastNetwork, make_augment=None, **fit_kwargs):
    "The weights before and after `fit` on the GPU from seed 0, with or without CUDA graphs, and the history."
    seed_everything(0)
    model = network()
    before = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    augment = make_augment() if make_augment is not None else None  # a fresh generator: both runs draw the same moves
    history = fit(model, train, seed=0, device='cuda', quiet=True, cuda_graphs=graphs, augment=augment, **fit_kwargs)
    return before, {k: v.detach().float().cpu() for k, v in model.state_dict().items()}, history


def assert_same_training(train, network=FastNetwork, tolerance=1e-3, **fit_kwargs):
    "Graphed and eager training end within `tolerance` of each other, relative to how far the weights moved."
    start, eager, eager_history = weights_after(train, False, network, **fit_kwargs)
    _, graphed, graphed_history = weights_after(train, True, network, **fit_kwargs)
    for e, g in zip(eager_history, graphed_history):
        assert abs(e['correct'] - g['correct']) <= 0.01 * len(train), (e, g)
        assert e['total_loss'] == pytest.approx(g['total_loss'], rel=1e-2)
    moved = torch.cat([(eager[k] - start[k]).flatten() for k in eager]).norm()
    apart = torch.cat([(eager[k] - graphed[k]).flatten() for k in eager]).norm()
    assert moved > 0 and apart <= tolerance * moved, (apart.item(), moved.item())


def capturable_adam(params, lr):
    "Fused Adam that keeps its step count on the device, as the graph makes it, but stepped eagerly too."
    return torch.optim.Adam(params, lr=lr, fused=True, capturable=True)


def test_graphed_steps_train_as_eager_steps_do(small_train):
    "Graphs change how a step is launched, not what it computes."
    # Eight steps: three eager ones, the recording and four replays. The graph's Adam counts its steps on the device,
    # whose bias correction rounds otherwise than the host's: apart by rounding, which a few steps keep small.
    assert_same_training(small_train.head(800), epochs=1)
    # With that same Adam on both sides: two epochs of five full batches and a smaller one stepped beside the graph
    assert_same_training(small_train.head(550), epochs=2, opt_func=capturable_adam, tolerance=1e-5)


def test_graphed_epochs_stay_within_the_gpus_own_noise(small_train):
    "Over 48 steps the GPU's own non-determinism grows (two eager runs end a few percent apart); graphs add no more."
    def apart(a, b): return torch.cat([(a[k] - b[k]).flatten() for k in a]).norm()
    start, eager, _ = weights_after(small_train, False, epochs=2, opt_func=capturable_adam)
    _, again, _ = weights_after(small_train, False, epochs=2, opt_func=capturable_adam)
    _, graphed, _ = weights_after(small_train, True, epochs=2, opt_func=capturable_adam)
    noise, moved = apart(eager, again), apart(eager, start)
    assert apart(eager, graphed) <= 3 * noise + 1e-5 * moved, (apart(eager, graphed).item(), noise.item(), moved.item())


def test_graphed_recipe_trains_as_eager_steps_do(small_train):
    "06_beyond's recipe: AdamW stepped outside the graph after each replay, the one-cycle rate, bfloat16, mirrors."
    def mirrors(): return partial(shift_and_flip, max_shift=0, generator=torch.Generator(device='cuda').manual_seed(0))
    for make_augment in (None, mirrors):
        assert_same_training(small_train.head(1000), partial(BetterNetwork, dropout=0.0), tolerance=1e-2, epochs=2,
                             batch_size=128, lr=0.005, schedule=one_cycle, precision='bfloat16', make_augment=make_augment,
                             opt_func=partial(adam, weight_decay=0.05), loss_func=partial(F.cross_entropy, label_smoothing=0.1))


def test_graphs_record_once_and_wait_no_more(small_train):
    "The graph is recorded after three eager steps, the optimizer inside it; an epoch's waits do not grow with its batches."
    data = small_train.to('cuda')
    def epoch(n_images):
        model = FastNetwork().to('cuda', memory_format=torch.channels_last)
        optimizer = adam(model.parameters())
        graph = CudaGraphStep(model, optimizer, 100)
        batches = data.head(n_images).batches(100, shuffle=True, generator=torch.Generator(device='cuda').manual_seed(0))
        return graph, lambda: train_epoch(model, batches, optimizer, check_every=1000, graph=graph)
    (short_graph, short), (long_graph, long) = epoch(1200), epoch(2400)
    waits = waits_for_the_gpu(short), waits_for_the_gpu(long)
    assert waits[0] == waits[1], waits
    assert long_graph.graph is not None and long_graph.steps_before_graph == 3 and long_graph.optimizer_in_graph
    assert all(group['capturable'] for group in long_graph.optimizer.param_groups)


def test_fit_without_graphs_on_request(small_train):
    "cuda_graphs=False trains eagerly on the GPU: no graph is made."
    made = []
    real_init = CudaGraphStep.__init__
    def recording_init(self, *args, **kwargs):
        made.append(self)
        real_init(self, *args, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CudaGraphStep, '__init__', recording_init)
        fit(FastNetwork(), small_train.head(500), epochs=1, device='cuda', quiet=True, cuda_graphs=False)
        assert made == []
        fit(FastNetwork(), small_train.head(500), epochs=1, device='cuda', quiet=True)
        assert len(made) == 1 and made[0].graph is not None
