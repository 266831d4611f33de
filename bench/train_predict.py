"""One measured run of one path, in a process of its own so that its peak memory is its own.

    python bench/train_predict.py --path tutorial --seed 0     # the tutorial's loop, as it wrote it
    python bench/train_predict.py --path fashion_nb --seed 0   # fashion_nb's training and prediction
    python bench/train_predict.py --path tutorial --device cuda  # on a GPU: the tutorial moves each batch there

Prints one line of JSON: seconds per epoch, seconds to predict all 70,000 images, accuracies, peak RSS
(and, on a GPU, the peak of the GPU memory PyTorch allocated).
"""
import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F
import torch.optim as optim

from fashion_nb.model import Network  # the tutorial's network as it wrote it: ReLU, then pool, PyTorch's operations

EPOCHS, BATCH_SIZE, LR = 5, 100, 0.01  # the tutorial's settings


def tutorial_epoch(network, batches, optimizer, device='cpu') -> tuple[float, int]:
    "One pass of the tutorial's training loop, as it wrote it; the total loss and the number correct."
    total_loss = 0
    total_correct = 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)  # how PyTorch's tutorials train on a GPU; a no-op on the CPU
        preds = network(images)
        loss = F.cross_entropy(preds, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
        total_correct += preds.argmax(dim=1).eq(labels).sum().item()
    return total_loss, total_correct


def wait_for(device) -> None:
    "Let the GPU finish its queued work before a clock is read; the CPU has nothing queued."
    if torch.device(device).type == 'cuda': torch.cuda.synchronize(device)


def tutorial(seed: int, device: str = 'cpu') -> dict:
    "The tutorial's code path: torchvision's dataset with ToTensor, a DataLoader, `.item()` every batch."
    from fashion_nb.datafiles import torchvision_dataset  # the same checked files; torchvision reads them itself
    train_set, test_set = torchvision_dataset('train', download=False), torchvision_dataset('test', download=False)
    torch.manual_seed(seed)
    network = Network().to(device)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True)
    optimizer = optim.Adam(network.parameters(), lr=LR)
    epoch_seconds = []
    for epoch in range(EPOCHS):
        start = time.perf_counter()
        total_loss, total_correct = tutorial_epoch(network, train_loader, optimizer, device)
        wait_for(device)
        epoch_seconds.append(time.perf_counter() - start)

    def get_all_preds(model, loader):
        all_preds = torch.tensor([], device=device)
        for images, labels in loader:
            preds = model(images.to(device))
            all_preds = torch.cat((all_preds, preds), dim=0)
        return all_preds

    start = time.perf_counter()
    with torch.no_grad():
        train_preds = get_all_preds(network, torch.utils.data.DataLoader(train_set, batch_size=10000))
        test_preds = get_all_preds(network, torch.utils.data.DataLoader(test_set, batch_size=10000))
    wait_for(device)
    predict_seconds = time.perf_counter() - start
    return dict(epoch_seconds=epoch_seconds, predict_seconds=predict_seconds,
                final_epoch_accuracy=total_correct / len(train_set),
                train_accuracy=train_preds.argmax(1).cpu().eq(train_set.targets).float().mean().item(),
                test_accuracy=test_preds.argmax(1).cpu().eq(test_set.targets).float().mean().item())


def fashion_nb(seed: int, device: str = 'cpu') -> dict:
    "fashion_nb's path: the in-memory split, the engine's `fit` of a `FastNetwork`, and `get_all_preds` under inference mode."
    from fashion_nb.data import load_split
    from fashion_nb.engine import fit
    from fashion_nb.fast_network import FastNetwork
    from fashion_nb.inference import accuracy, get_all_preds
    from fashion_nb.training import seed_everything
    train, test = load_split('train', download=False), load_split('test', download=False)
    seed_everything(seed)
    model = FastNetwork()  # `Network`'s layers and weights: pool before ReLU, fused kernels in training, strided pool in scoring
    history = fit(model, train, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, seed=seed, device=device, quiet=True)
    start = time.perf_counter()
    train_logits, test_logits = get_all_preds(model, train), get_all_preds(model, test)
    wait_for(device)
    predict_seconds = time.perf_counter() - start
    return dict(epoch_seconds=[h['seconds'] for h in history], predict_seconds=predict_seconds,
                final_epoch_accuracy=history[-1]['accuracy'],
                train_accuracy=accuracy(train_logits, train.labels), test_accuracy=accuracy(test_logits, test.labels))


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--path', choices=('tutorial', 'fashion_nb'), required=True)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where the path trains and predicts')
    args = parser.parse_args()
    result = (tutorial if args.path == 'tutorial' else fashion_nb)(args.seed, args.device)
    result.update(path=args.path, seed=args.seed, device=args.device, threads=torch.get_num_threads(),
                  max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux reports KiB
    if torch.device(args.device).type == 'cuda': result['max_gpu_mb'] = torch.cuda.max_memory_allocated(args.device) / 2**20
    print(json.dumps(result))
