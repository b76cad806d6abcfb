"""Train a small convolutional SNN on a synthetic temporal task, with exodus-jit and with sinabs.

The task (generated here, no downloads): a bar sweeps across a 16x16 event sensor in one of four
directions; the network must tell which. Only the order of events in time tells the classes
apart, so the network has to integrate over time. Both models start from the same weights; the
script prints loss, accuracy and time per epoch for each and saves the loss curves.

    python examples/train_synthetic.py --epochs 5
"""

from __future__ import annotations

import argparse
import copy
import time

import sinabs.layers as sl
import torch
import torch.nn as nn

from exodus_jit.conversion import sinabs_to_exodus

SIZE = 16
DIRECTIONS = 4


def make_dataset(n: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Events (n, steps, 2, SIZE, SIZE): channel 0 where the bar arrives, 1 where it left."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, DIRECTIONS, (n,), generator=g)
    frames = torch.zeros(n, steps + 1, SIZE, SIZE)
    for i, label in enumerate(labels.tolist()):
        for t in range(steps + 1):
            pos = int(t * (SIZE - 1) / steps)
            pos = pos if label in (0, 2) else SIZE - 1 - pos
            if label < 2:
                frames[i, t, :, pos] = 1.0  # vertical bar moving left or right
            else:
                frames[i, t, pos, :] = 1.0  # horizontal bar moving down or up
    on = (frames[:, 1:] - frames[:, :-1]).clamp(min=0)
    off = (frames[:, :-1] - frames[:, 1:]).clamp(min=0)
    events = torch.stack([on, off], 2)
    noise = (torch.rand(events.shape, generator=g) < 0.02).float()
    return (events + noise).clamp(max=1.0), labels


def make_model(batch: int) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), sl.IAFSqueeze(batch_size=batch, min_v_mem=-1.0), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), sl.LIFSqueeze(tau_mem=10.0, norm_input=False, batch_size=batch),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, DIRECTIONS),
        sl.LIFSqueeze(tau_mem=10.0, norm_input=False, batch_size=batch),
    )
    with torch.no_grad():  # default inits are scaled for dense activations; events are sparse
        for layer, gain in ((model[0], 4.0), (model[3], 6.0), (model[7], 12.0)):
            layer.weight *= gain
    return model


def reset(model: nn.Module) -> None:
    for layer in model.modules():
        if isinstance(layer, sl.StatefulLayer):
            layer.reset_states()


def train(model, data, labels, epochs, batch, device, name):
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = data.shape[1]
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        total, correct = 0.0, 0
        for i in range(0, len(data), batch):
            x = data[i:i + batch].to(device).flatten(0, 1)  # (batch*time, 2, H, W) for the Squeeze layers
            y = labels[i:i + batch].to(device)
            reset(model)
            opt.zero_grad()
            counts = model(x).reshape(batch, steps, DIRECTIONS).sum(1)
            loss = nn.functional.cross_entropy(counts, y)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            correct += int((counts.argmax(1) == y).sum())
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        history.append(total / len(data))
        print(f"{name:>10} epoch {epoch}: loss {history[-1]:.4f}  accuracy {correct / len(data):.2f}  "
              f"{seconds:.2f} s/epoch", flush=True)
    return history, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--plot", default="train_synthetic_loss.png")
    args = parser.parse_args()

    data, labels = make_dataset(args.train_size, args.steps, seed=1)
    sinabs_model = make_model(args.batch).to(args.device)
    exodus_model = sinabs_to_exodus(copy.deepcopy(sinabs_model))
    curves, times = {}, {}
    for name, model in (("exodus-jit", exodus_model), ("sinabs", sinabs_model)):
        curves[name], times[name] = train(model, data, labels, args.epochs, args.batch, args.device, name)
    print(f"last epoch: exodus-jit {times['exodus-jit']:.2f} s, sinabs {times['sinabs']:.2f} s "
          f"({times['sinabs'] / times['exodus-jit']:.1f}x)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title(f"moving-bar direction, {args.device}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"loss curves saved to {args.plot}")


if __name__ == "__main__":
    main()
