"""exodus-jit in one minute: convert a sinabs model, check it against sinabs, time both.

Runs on the GPU when there is one, else on the CPU. The first run compiles the kernels for this
machine (printed below) and caches them; later runs start at once.

    python examples/quickstart.py
"""

import copy
import time

import sinabs.layers as sl
import torch
import torch.nn as nn

from exodus_jit.conversion import sinabs_to_exodus

device = "cuda" if torch.cuda.is_available() else "cpu"
batch, steps = 8, 100
torch.manual_seed(0)

# A small convolutional SNN written with sinabs layers.
sinabs_model = nn.Sequential(
    nn.Conv2d(2, 8, 3, padding=1), sl.IAFSqueeze(batch_size=batch, min_v_mem=-1.0), nn.AvgPool2d(2),
    nn.Conv2d(8, 16, 3, padding=1), sl.LIFSqueeze(tau_mem=10.0, tau_syn=5.0, norm_input=False, batch_size=batch), nn.AvgPool2d(2),
    nn.Flatten(), nn.Linear(16 * 8 * 8, 10), sl.LIFSqueeze(tau_mem=20.0, norm_input=False, batch_size=batch),
).to(device)
with torch.no_grad():
    sinabs_model[7].weight *= 10  # enough drive for the output layer to spike
exodus_model = sinabs_to_exodus(copy.deepcopy(sinabs_model))  # the one-line migration
print(exodus_model)

x = torch.rand(batch * steps, 2, 32, 32, device=device) * 4


def run(model):
    for layer in model.modules():
        if isinstance(layer, sl.StatefulLayer):
            layer.reset_states()
    model.zero_grad()
    out = model(x)
    out.sum().backward()
    return out, [p.grad.clone() for p in model.parameters() if p.requires_grad]


def timed(model, repeats=3):
    run(model)  # warm-up (and, for exodus on first use, the kernel build)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        run(model)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


out_s, grads_s = run(sinabs_model)
out_e, grads_e = run(exodus_model)
worst = max(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in zip(grads_e, grads_s))
print(f"\ndevice: {device}")
print(f"outputs identical to sinabs: {torch.equal(out_e, out_s)}  (spikes: {int(out_s.sum())})")
print(f"largest relative gradient difference vs sinabs BPTT: {worst:.1e}")
t_sinabs, t_exodus = timed(sinabs_model), timed(exodus_model)
print(f"forward + backward, {batch}x{steps} steps: sinabs {t_sinabs:.1f} ms, exodus-jit {t_exodus:.1f} ms "
      f"({t_sinabs / t_exodus:.1f}x faster)")
assert torch.equal(out_e, out_s) and worst < 1e-4
