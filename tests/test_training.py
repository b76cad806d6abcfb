"""The training workflow: torch.compile, autocast, CUDA graphs, side streams, the example."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from conftest import DEVICES, REPO, needs_cuda
from exodus_jit import layers as el
from oracle import rel_err


def small_model(device, dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), el.LIF(tau_mem=8.0, tau_syn=4.0, min_v_mem=-1.0), nn.Linear(8, 4),
                         el.IAF()).to(device, dtype)


def reset(model):
    for m in model.modules():
        if hasattr(m, "reset_states"):
            m.reset_states()


def run(model, x):
    reset(model)
    out = model(x)
    loss = (out * torch.linspace(-1, 1, out.shape[-1], device=out.device, dtype=out.dtype)).sum()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [x, *params], allow_unused=True)
    return out, [g for g in grads if g is not None]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_model_equals_eager(device):
    model = small_model(device)
    x = (torch.randn(3, 20, 6, device=device) * 3).requires_grad_()
    out_e, g_e = run(model, x)
    compiled = torch.compile(model)
    out_c, g_c = run(compiled, x)
    assert torch.equal(out_c, out_e)
    for a, b in zip(g_c, g_e):
        assert rel_err(a, b) < 1e-5


def test_ops_cause_no_graph_break_inside():
    """The only graph breaks of a layer come from sinabs' Python state handling, never from the ops."""
    from exodus_jit import ops

    def fn(x, v0):
        i_all, _ = ops.synaptic_current(x, v0, 0.8)
        return ops.membrane(i_all, v0, 0.9, min_v_mem=-1.0).output

    explanation = torch._dynamo.explain(fn)(torch.randn(2, 5, 3), torch.zeros(2, 3))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.parametrize("device_type,dtype", [
    ("cpu", torch.bfloat16),
    pytest.param("cuda", torch.bfloat16, marks=[needs_cuda, pytest.mark.cuda]),
    pytest.param("cuda", torch.float16, marks=[needs_cuda, pytest.mark.cuda]),
])
def test_autocast_keeps_float32_state_and_stays_close(device_type, dtype):
    model = small_model(device_type)
    x = torch.randn(4, 40, 6, device=device_type) * 3
    reset(model)
    reference = model(x)
    reset(model)
    with torch.autocast(device_type, dtype=dtype):
        out = model(x)
    assert out.dtype == dtype  # the layer follows its input, the Linear's autocast output
    assert model[1].v_mem.dtype == torch.float32 and model[3].v_mem.dtype == torch.float32
    # spikes are integers; rounding the drive to half precision flips a few threshold crossings
    mismatch = (out.float() != reference).float().mean().item()
    assert mismatch < 0.05, mismatch
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@needs_cuda
@pytest.mark.cuda
def test_cuda_graph_capture_of_forward_and_backward():
    model = small_model("cuda")
    static_x = (torch.randn(3, 20, 6, device="cuda") * 3).requires_grad_()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside the graph: builds kernels, caches allocations
            reset(model)
            model(static_x).sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    model.zero_grad(set_to_none=True)
    static_x.grad = None
    with torch.cuda.graph(graph):
        reset(model)
        static_out = model(static_x)
        static_out.sum().backward()
    new_x = torch.randn(3, 20, 6, device="cuda") * 3
    with torch.no_grad():
        static_x.copy_(new_x)
    graph.replay()
    torch.cuda.synchronize()
    eager_x = new_x.clone().requires_grad_()
    reset(model)
    eager_out = model(eager_x)
    (g_eager,) = torch.autograd.grad(eager_out.sum(), eager_x)
    assert torch.equal(static_out, eager_out)
    assert rel_err(static_x.grad, g_eager) < 1e-6


@needs_cuda
@pytest.mark.cuda
def test_side_stream_results_equal_default_stream():
    model = small_model("cuda")
    x = (torch.randn(8, 200, 6, device="cuda") * 3).requires_grad_()
    out_default, g_default = run(model, x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out_side, g_side = run(model, x)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    assert torch.equal(out_side, out_default)
    for a, b in zip(g_side, g_default):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_train_synthetic_example_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "train_synthetic.py"), "--epochs", "2",
                           "--train-size", "32", "--steps", "20", "--device", "cpu", "--plot", str(tmp_path / "loss.png")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "epoch 2" in proc.stdout and (tmp_path / "loss.png").stat().st_size > 0


def test_layer_model_traces_without_graph_breaks():
    """sinabs' state handling included: the whole model is one graph."""
    explanation = torch._dynamo.explain(small_model("cpu"))(torch.randn(3, 20, 6))
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]


def test_options_changed_after_construction_take_effect():
    from sinabs.activation import SingleSpike

    layer = el.IAF()
    x = torch.full((1, 1, 1), 2.5)
    assert layer(x).max() == 2  # MultiSpike
    layer.spike_fn = SingleSpike
    layer.reset_states()
    assert layer(x).max() == 1


@pytest.mark.slow
def test_ddp_example_on_two_cpu_processes(tmp_path):
    """examples/ddp_train.py with gloo: the ranks share one JIT cache (one build) and their losses
    equal a single process on the global batch (the script checks and fails otherwise)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), EXODUS_JIT_CACHE=str(tmp_path / "cache"),
               CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           str(REPO / "examples" / "ddp_train.py"), "--steps", "3"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("kernels loaded") == 2
    assert (proc.stdout + proc.stderr).count("exodus-jit: compiling") == 1
    assert "largest relative loss difference" in proc.stdout
