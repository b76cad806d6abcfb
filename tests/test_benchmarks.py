"""The benchmark runner's own logic, on the CPU: its sizes, its modes and its plot's grouping.

The timings themselves are not asserted (speed is measured in benchmarks/, not in tests); what
is asserted is that the runner builds the networks the protocol describes: in the "linear" mode
every framework gets the same nn.Linear, so exodus-jit's network gives sinabs' spikes.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_layer():
    return load("bench_layer")


def test_sizes_given_then_sweeps_without_repeats(bench_layer):
    sizes = bench_layer.sizes_of(["16x500x512", "2x3x4"], ["n", "t"])
    assert sizes[:2] == ["16x500x512", "2x3x4"]
    assert len(sizes) == len(set(sizes))
    assert set(bench_layer.SWEEPS["n"]) | set(bench_layer.SWEEPS["t"]) <= set(sizes)
    # the n sweep holds the protocol's batch and time and reaches its largest layer
    assert all(s.startswith("16x500x") for s in bench_layer.SWEEPS["n"]) and "16x500x16384" in sizes
    assert bench_layer.sizes_of([], []) == []


@pytest.mark.parametrize("kind", ["LIF", "LIF_syn"])
def test_linear_mode_gives_every_framework_the_same_network(bench_layer, kind):
    x = torch.randn(2, 30, 16) * 3
    outputs = []
    for framework in ("exodus-jit", "sinabs"):
        model = bench_layer.make_model(framework, kind, "cpu", "linear", 16)
        assert isinstance(model.linear, torch.nn.Linear) and model.linear.in_features == 16
        with torch.no_grad():
            outputs.append(model(x))
    weights = [bench_layer.make_model(f, kind, "cpu", "linear", 16).linear.weight for f in ("exodus-jit", "sinabs")]
    assert torch.equal(*weights)
    assert outputs[0].sum() > 0  # some spikes, so the comparison below means something
    assert torch.equal(outputs[0], outputs[1])  # exodus-jit's forward is sinabs' bit for bit


def test_layer_mode_is_the_layer_alone(bench_layer):
    model = bench_layer.make_model("exodus-jit", "LIF", "cpu", "layer", 16)
    assert not hasattr(model, "linear") and type(model).__name__ == "LIF"
    assert bench_layer.make_model("floor", "IAF", "cpu", "linear", 16) is None  # the floor is LIF only


def test_bench_reports_each_mode_and_the_plot_groups_by_it(bench_layer):
    rows = [bench_layer.bench("exodus-jit", "LIF", (2, 20, 8), "cpu", torch.float32, 2, 1, mode)
            for mode in ("layer", "linear")]
    assert [r["mode"] for r in rows] == ["layer", "linear"]
    for r in rows:
        assert r["shape"] == [2, 20, 8] and r["total_ms"] > 0 and 0 <= r["firing"] <= 1
        # each phase's host time is recorded; on the CPU the host time is the whole time
        assert (r["forward_host_ms"], r["backward_host_ms"]) == (r["forward_ms"], r["backward_ms"])
    plot = load("plot_results")  # matplotlib is imported only to draw
    series = plot.series(rows + [{**rows[0], "framework": "floor"}])
    assert set(series) == {"layer", "linear"}
    assert series["linear"]["exodus-jit"] == {"2x20x8": rows[1]["total_ms"]}
    assert set(series["layer"]) == {"exodus-jit", "floor"}


def test_each_timed_repeat_starts_without_gradients(bench_layer, monkeypatch):
    """No gradient accumulation in the times: when each timed forward starts, x's and every
    parameter's gradient (the linear map's and tau_mem's) are None, as after a training step's
    optimizer.zero_grad(); the warm-up, which does not clear them, shows that they would not be."""
    seen = []
    make_model = bench_layer.make_model

    def spied_model(*args, **kwargs):
        model = make_model(*args, **kwargs)
        forward = model.forward

        def recording_forward(x):
            seen.append([x.grad is None] + [p.grad is None for p in model.parameters() if p.requires_grad])
            return forward(x)

        model.forward = recording_forward
        return model

    monkeypatch.setattr(bench_layer, "make_model", spied_model)
    bench_layer.bench("exodus-jit", "LIF", (2, 20, 8), "cpu", torch.float32, 3, 2, "linear")
    assert len(seen) == 5 and len(seen[0]) == 4  # x, weight, bias, tau_mem
    assert not any(seen[1])  # the second warm-up forward: all four hold the first's gradients
    assert all(all(s) for s in seen[2:])


def test_plot_series_takes_the_first_row_of_each_point():
    plot = load("plot_results")
    row = {"framework": "exodus-jit", "layer": "LIF", "shape": [16, 500, 512], "dtype": "float32"}
    series = plot.series([{**row, "total_ms": 0.2}, {**row, "total_ms": 0.9, "mode": "layer"},
                          {**row, "total_ms": 5.0, "dtype": "bfloat16"}, {**row, "total_ms": 7.0, "layer": "IAF"}])
    assert dict(series["layer"]["exodus-jit"]) == {"16x500x512": 0.2}


def test_results_name_the_code_measured(bench_layer):
    from exodus_jit import __version__

    info = bench_layer.source_version()
    assert info["exodus_jit"] == __version__
    # in a git checkout (CI runs in a clone) the short hash of the commit measured
    assert info["commit"] is None or (len(info["commit"]) >= 7 and int(info["commit"], 16) >= 0)
    # the kernel sources' hash is the JIT cache key's source part, so it names what was built
    from exodus_jit.ops import _extension

    assert info["kernel_sources"] == _extension.cuda_spec().source_hash()[:16]


def test_results_say_when_the_sources_differ_from_the_commit(bench_layer, tmp_path, monkeypatch):
    """A GPU machine can get a working tree ahead of its .git: the commit alone would then name
    code that did not run."""
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "checkout"
    (root / "benchmarks").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "a.py").write_text("x = 1\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=root, check=True, env={**os.environ, **env})
    monkeypatch.setattr(bench_layer, "__file__", str(root / "benchmarks" / "bench_layer.py"))
    assert bench_layer.source_version()["sources_differ"] is False
    (root / "src" / "a.py").write_text("x = 2\n")
    assert bench_layer.source_version()["sources_differ"] is True


def test_kernel_time_fingerprint_tells_bits_apart():
    """kernel_time.py's fingerprint of the kernels' outputs: the same for equal bits (other
    tensors, placeholders and None skipped), different for one flipped bit or another shape."""
    fingerprint = load("kernel_time").fingerprint
    a, b = torch.randn(3, 5), torch.randn(5)
    same = fingerprint((a.clone(), None, b.clone(), torch.empty(0)))
    assert fingerprint((a, b)) == same
    flipped = a.clone()
    flipped.view(torch.int32)[1, 2] ^= 1
    assert fingerprint((flipped, b)) != same
    assert fingerprint((a.reshape(5, 3), b)) != same


def test_host_overhead_diagnostics_time_every_path_on_the_cpu():
    """host_overhead.py's single-call diagnostics, which device_run.sh runs on every GPU host
    (where a broken one would cost device time), give a time for each of their paths on the CPU
    too: each path runs against the layer's own call structure (few calls: not their speed)."""
    host_overhead = load("host_overhead")
    results = {
        "cold": host_overhead.cold_us("cpu", calls=3),
        "cold parts": host_overhead.cold_parts_us("cpu", calls=3),
        "gaps": host_overhead.gap_us("cpu", calls=2, gaps_s=(0.0, 1e-4)),
    }
    assert len(results["cold"]) == 5 and len(results["cold parts"]) == 10 and len(results["gaps"]) == 4
    for name, times in results.items():
        for path, value in times.items():
            for us in value if isinstance(value, tuple) else (value,):
                assert 0 < us < 1e6, (name, path, us)


def test_footprint_paths_run_the_layer_both_ways():
    """footprint.py's paths (counted under valgrind by footprint.sh) run on the CPU, and its layer
    on the kept call's path, its layer on the general path and its minimal call (the operator
    with the least bookkeeping) give the same output."""
    paths = load("footprint").paths()
    assert paths["none"]() is None
    for name in ("floor", "op"):
        assert paths[name]().shape == (1, 1, 1)
    assert torch.equal(paths["layer"](), paths["general"]())
    assert torch.equal(paths["minimal"](), paths["layer"]())
