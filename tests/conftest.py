import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

# Devices every numerical test runs on: the CPU always, CUDA where a GPU is present.
DEVICES = ["cpu", pytest.param("cuda", marks=[needs_cuda, pytest.mark.cuda])]


def cuda_kernel_names(fn) -> list:
    """The names of the CUDA kernels that fn() launches (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def scan_expected(shape) -> bool:
    """Whether the CUDA scan backward takes a float32 (B, T, N) call, with or without the synaptic
    stage: at most one 64-neuron block per multiprocessor, at least 64 steps (cuda_scan_backward.cuh);
    EXODUS_JIT_KERNELS=scan takes it always, =ring never (so the whole suite can run each way)."""
    choice = os.environ.get("EXODUS_JIT_KERNELS")
    if choice in ("scan", "ring"):
        return choice == "scan"
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return -(-shape[0] * shape[2] // 64) <= sms and shape[1] >= 64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def kernels_backend():
    """Run the test on the compiled kernels, whatever EXODUS_JIT_BACKEND says."""
    from exodus_jit import ops

    ops.set_backend("kernels")
    yield
    ops.set_backend(None)
