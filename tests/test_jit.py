"""The build system, through the same code path the kernels use, with fixture extensions.

Builds run in subprocesses: a library registers its operators once per process, and a new
process is what "second load hits the cache" means.
"""

import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest
import torch

from exodus_jit.jit import ExtensionSpec, cache_key, key_fields, toolchain
from exodus_jit.jit.cache import list_entries

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"
SRC = REPO / "src"
pytestmark = pytest.mark.slow


def fixture_spec(answer=42, name="fixture_answer", source=FIXTURES / "answer_op.cpp", extra=()):
    return ExtensionSpec(name, (source,), cflags=(f"-DFIXTURE_ANSWER={answer}", "-DFIXTURE_NAMESPACE=exodus_fixture", *extra))


LOAD_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {src!r})
    from pathlib import Path
    from exodus_jit.jit import ExtensionSpec, prepare
    spec = ExtensionSpec("fixture_answer", (Path({source!r}),),
                         cflags=("-DFIXTURE_ANSWER={answer}", "-DFIXTURE_NAMESPACE=exodus_fixture"))
    start = time.monotonic()
    prepare(spec)
    elapsed = time.monotonic() - start
    print("ANSWER", int(torch.ops.exodus_fixture.add_answer(torch.zeros(1)).item()), "SECONDS", elapsed)
""")


def load_script(answer=42, source=FIXTURES / "answer_op.cpp"):
    return LOAD_SCRIPT.format(src=str(SRC), source=str(source), answer=answer)


def run_python(script, cache, env_extra=None, timeout=300, **kwargs):
    env = dict(os.environ, EXODUS_JIT_CACHE=str(cache), PYTHONPATH=str(SRC))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def answer_of(proc):
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("ANSWER"))
    parts = line.split()
    return int(parts[1]), float(parts[3])


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory):
    """One fixture build shared by the tests that only need a complete entry."""
    cache = tmp_path_factory.mktemp("cache")
    proc = run_python(load_script(), cache)
    assert answer_of(proc)[0] == 42
    assert "exodus-jit: compiling fixture_answer" in proc.stderr and "built fixture_answer in" in proc.stderr
    return cache


def test_second_load_in_new_process_hits_cache_without_compiler(built_cache):
    # No compiler and no ninja reachable: only a cache hit can succeed.
    env = {"CXX": "/nonexistent/c++", "PATH": "/nonexistent"}
    answer, seconds = answer_of(run_python(load_script(), built_cache, env))
    assert answer == 42
    assert seconds < 0.5


def test_read_only_cache_loads_without_lock(built_cache, tmp_path):
    locks = built_cache / "locks"
    for lock in locks.iterdir():
        lock.unlink()
    os.chmod(locks, 0o555)
    try:
        proc = run_python(load_script(), built_cache, {"CXX": "/nonexistent/c++"})
        assert answer_of(proc)[0] == 42
        assert not list(locks.iterdir()), "a complete entry must load without taking the lock"
    finally:
        os.chmod(locks, 0o755)


def test_key_changes_with_source_flags_and_torch(tmp_path, monkeypatch):
    source = tmp_path / "answer_op.cpp"
    source.write_text((FIXTURES / "answer_op.cpp").read_text())
    base = cache_key(key_fields(fixture_spec(source=source)))
    assert cache_key(key_fields(fixture_spec(source=source))) == base  # deterministic
    assert cache_key(key_fields(fixture_spec(answer=7, source=source))) != base  # a flag
    source.write_text(source.read_text() + "\n// edited\n")
    edited = cache_key(key_fields(fixture_spec(source=source)))
    assert edited != base  # the source
    info = toolchain.torch_info()
    monkeypatch.setattr(toolchain, "torch_info", lambda: info.__class__(**{**info.__dict__, "version": "9.9.9"}))
    assert cache_key(key_fields(fixture_spec(source=source))) != edited  # torch


def test_eight_processes_build_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", load_script(answer=8)],
                              env=dict(os.environ, EXODUS_JIT_CACHE=str(tmp_path), PYTHONPATH=str(SRC)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outputs]
    assert all("ANSWER 8" in out for out, _ in outputs)
    builds = sum(err.count("exodus-jit: compiling") for _, err in outputs)
    assert builds == 1
    assert len(list_entries(tmp_path)) == 1


def test_killed_build_leaves_no_lock_or_half_entry(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", load_script(answer=9)],
                            env=dict(os.environ, EXODUS_JIT_CACHE=str(tmp_path), PYTHONPATH=str(SRC)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while not any((tmp_path / "tmp").glob("fixture_answer-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any((tmp_path / "tmp").glob("fixture_answer-*")), "the build never started"
    os.killpg(proc.pid, signal.SIGKILL)  # the interpreter and its compiler children
    proc.wait()
    assert list_entries(tmp_path) == []
    start = time.monotonic()
    answer, _ = answer_of(run_python(load_script(answer=9), tmp_path, timeout=120))
    assert answer == 9 and time.monotonic() - start < 120


def test_corrupted_library_is_rebuilt_once_with_warning(tmp_path):
    answer_of(run_python(load_script(answer=5), tmp_path))
    (entry,) = list_entries(tmp_path)
    entry.library.write_bytes(b"not an ELF file")
    proc = run_python(load_script(answer=5), tmp_path)
    assert answer_of(proc)[0] == 5
    assert "failed to load" in proc.stderr and "rebuilding it once" in proc.stderr
    assert "exodus-jit: compiling" in proc.stderr


def diagnosis_of(script_body, cache, env_extra=None):
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        sys.path.insert(0, {src!r})
        from exodus_jit.jit import ExodusBuildError, ExtensionSpec, prepare
        try:
        {body}
        except ExodusBuildError as exc:
            print("DIAGNOSIS", exc.diagnosis.code)
            print(exc)
    """).format(src=str(SRC), body=textwrap.indent(textwrap.dedent(script_body), "    "))
    proc = run_python(script, cache, env_extra)
    assert "DIAGNOSIS" in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout.split("DIAGNOSIS ")[1].split()[0], proc.stdout


BUILD_CPU_FIXTURE = f"""
prepare(ExtensionSpec("fixture_answer", (Path({str(FIXTURES / 'answer_op.cpp')!r}),),
        cflags=("-DFIXTURE_ANSWER=1", "-DFIXTURE_NAMESPACE=exodus_fixture")))
"""
BUILD_CUDA_FIXTURE = f"""
prepare(ExtensionSpec("fixture_cuda", (Path({str(FIXTURES / 'cuda_answer.cu')!r}), Path({str(FIXTURES / 'cuda_answer_op.cpp')!r}))), archs=["9.0"])
"""


def test_unwritable_cache_root(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, text = diagnosis_of(BUILD_CPU_FIXTURE, blocker / "cache")
    assert code == "cache-unwritable" and "EXODUS_JIT_CACHE" in text


def test_no_compiler(tmp_path):
    code, text = diagnosis_of(BUILD_CPU_FIXTURE, tmp_path, {"CXX": "/nonexistent"})
    assert code == "no-compiler" and "/nonexistent" in text


def test_compile_error_names_first_errors_and_log(tmp_path):
    body = f'prepare(ExtensionSpec("fixture_broken", (Path({str(FIXTURES / "broken.cpp")!r}),)))'
    code, text = diagnosis_of(body, tmp_path)
    assert code == "compiler-error"
    assert "undefined_symbol_for_the_test" in text
    log = Path(text.split("Full build log: ")[1].split()[0])
    assert log.is_file() and "undefined_symbol_for_the_test" in log.read_text()


def test_no_ninja(tmp_path):
    # A Python reached through a folder without ninja, and a `ninja` module without the binary.
    shadow = tmp_path / "shadow"
    (shadow / "ninja").mkdir(parents=True)
    (shadow / "ninja" / "__init__.py").write_text("")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    script = textwrap.dedent(f"""
        import site, sys
        sys.path.insert(0, {str(shadow)!r}); sys.path.insert(1, {str(SRC)!r})
        site.addsitedir({sysconfig.get_paths()["purelib"]!r})
        from pathlib import Path
        from exodus_jit.jit import ExodusBuildError, ExtensionSpec, prepare
        try:
            {BUILD_CPU_FIXTURE.strip()}
        except ExodusBuildError as exc:
            print("DIAGNOSIS", exc.diagnosis.code)
    """)
    env = dict(os.environ, EXODUS_JIT_CACHE=str(tmp_path / "cache"), PATH=str(tmp_path / "empty"))
    proc = subprocess.run([str(bindir / "python"), "-c", script], env=env, capture_output=True, text=True, timeout=120)
    if "DIAGNOSIS" not in proc.stdout and "ANSWER" not in proc.stdout and proc.returncode:
        pytest.fail(proc.stderr)
    assert "DIAGNOSIS no-ninja" in proc.stdout, proc.stdout + proc.stderr


needs_cuda_torch = pytest.mark.skipif(torch.version.cuda is None, reason="CPU-only torch")


@needs_cuda_torch
def test_no_nvcc(tmp_path):
    """CUDA_HOME pointing at a folder without nvcc is reported, not silently replaced."""
    (tmp_path / "not-a-toolkit").mkdir()
    env = {"PATH": "/usr/bin:/bin", "CUDA_HOME": str(tmp_path / "not-a-toolkit")}
    code, text = diagnosis_of(BUILD_CUDA_FIXTURE, tmp_path / "cache", env)
    assert code == "no-nvcc" and "not-a-toolkit" in text


@needs_cuda_torch
def test_fake_nvcc_with_another_cuda_version(tmp_path):
    home = tmp_path / "cuda-11.8"
    (home / "bin").mkdir(parents=True)
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 11.8, V11.8.89'\n")
    nvcc.chmod(0o755)
    code, text = diagnosis_of(BUILD_CUDA_FIXTURE, tmp_path / "cache", {"CUDA_HOME": str(home)})
    assert code == "cuda-version-mismatch" and "11.8" in text


@needs_cuda_torch
def test_arch_the_toolkit_cannot_target(tmp_path):
    if toolchain.find_cuda_home() is None:
        pytest.skip("no CUDA toolkit")
    body = BUILD_CUDA_FIXTURE.replace('archs=["9.0"]', 'archs=["3.0"]')
    code, _ = diagnosis_of(body, tmp_path)
    assert code == "unsupported-arch"


@needs_cuda_torch
def test_cuda_fixture_compiles_and_loads_without_gpu(tmp_path):
    if toolchain.find_cuda_home() is None:
        pytest.skip("no CUDA toolkit")
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(SRC)!r})
        from pathlib import Path
        from exodus_jit.jit import ExtensionSpec, prepare
        {BUILD_CUDA_FIXTURE.strip()}
        print("RUNTIME", torch.ops.exodus_cuda_fixture.cuda_runtime_version())
    """)
    proc = run_python(script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    version = int(proc.stdout.split("RUNTIME ")[1].split()[0])
    major = int(torch.version.cuda.split(".")[0])
    assert version // 1000 == major
    (entry,) = list_entries(tmp_path)
    assert entry.meta["archs"] == ["9.0"] and entry.meta["nvcc_version"]


def test_normalize_archs():
    assert toolchain.normalize_archs(["sm_90", "8.0", "86", "9.0+PTX"]) == ("8.0", "8.6", "9.0", "9.0+PTX")
    with pytest.raises(ValueError):
        toolchain.normalize_archs(["ampere"])
