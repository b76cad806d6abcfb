"""The `exodus-jit` command end to end, in subprocesses; and the wheel in a fresh venv."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

SRC = REPO / "src"
pytestmark = pytest.mark.slow


def cli(*args, cache, check=True, env_extra=None):
    env = dict(os.environ, EXODUS_JIT_CACHE=str(cache), PYTHONPATH=str(SRC), **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-m", "exodus_jit", *args], env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-cache")


def test_cache_path(cache):
    assert cli("cache", "path", cache=cache).stdout.strip() == str(cache)


def test_build_then_list_then_clear(cache):
    build = cli("build", "--cpu", cache=cache)
    assert "cpu:" in build.stdout and "exodus-jit: compiling exodus_kernels_cpu" in build.stderr
    again = cli("build", "--cpu", cache=cache)
    assert "compiling" not in again.stderr  # cached

    rows = json.loads(cli("cache", "list", "--json", cache=cache).stdout)
    assert [r["name"] for r in rows] == ["exodus_kernels_cpu"]
    assert rows[0]["current"] is True and rows[0]["size_bytes"] > 0
    assert "current" in cli("cache", "list", cache=cache).stdout

    # a stale entry: same layout, built "by another torch"
    stale = Path(rows[0]["path"]).with_name("exodus_kernels_cpu-0000000000000000")
    stale.mkdir()
    meta = json.loads((Path(rows[0]["path"]) / "entry.json").read_text())
    meta.update(torch_version="0.0.1", key="0000000000000000")
    (stale / "entry.json").write_text(json.dumps(meta))
    (stale / meta["library"]).write_bytes(b"")
    listing = cli("cache", "list", cache=cache).stdout
    assert "STALE" in listing

    refused = cli("cache", "clear", cache=cache, check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    cli("cache", "clear", "--stale", "--yes", cache=cache)
    rows = json.loads(cli("cache", "list", "--json", cache=cache).stdout)
    assert [r["key"] for r in rows] == [meta["name"] and rows[0]["key"]] and not stale.exists()
    cli("cache", "clear", "--yes", cache=cache)
    assert json.loads(cli("cache", "list", "--json", cache=cache).stdout) == []


def test_doctor_text_and_json(cache):
    proc = cli("doctor", cache=cache, check=False)
    report = json.loads(cli("doctor", "--json", cache=cache, check=False).stdout)
    assert proc.returncode == (0 if report["backends"]["cpu"]["status"] != "unavailable" else 1)
    for field in ("torch", "cxx", "ninja", "cuda_home", "gpus", "cache_root", "backends"):
        assert field in report
    assert report["cache_root"] == str(cache)
    assert report["backends"]["cpu"]["status"] in ("ready", "buildable")
    assert "backend cpu" in proc.stdout and "verdict" in proc.stdout
    if report["torch_cuda"] and report["cuda_home"] and not report["gpus"]:
        assert report["backends"]["cuda"]["status"] == "compilable"
        assert "no GPU present" in proc.stdout


def test_doctor_fails_when_cpu_cannot_work(tmp_path):
    proc = cli("doctor", cache=tmp_path, check=False, env_extra={"CXX": "/nonexistent"})
    assert proc.returncode == 1
    assert "no-compiler" in proc.stdout or "NOT FOUND" in proc.stdout


def test_wheel_is_pure_and_installs_into_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for source in ("cuda_kernels.cu", "cpu_kernels.cpp", "neuron_loops.h", "ops_impl.h"):
        assert f"exodus_jit/kernels/{source}" in names
    assert not [n for n in names if n.endswith((".so", ".o"))]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # torch and sinabs come from this environment, so the check costs no multi-GB install
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "--no-deps", "-q", str(wheel)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["EXODUS_JIT_CACHE"] = str(tmp_path / "cache")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import exodus_jit.ops as o; print(o.kernels_dir())"],
                           env=env, capture_output=True, text=True, check=True)
    assert str(venv) in where.stdout  # the installed copy, with its own kernel sources
    doctor = subprocess.run([str(venv / "bin" / "exodus-jit"), "doctor"], env=env, capture_output=True, text=True)
    assert "backend cpu" in doctor.stdout, doctor.stdout + doctor.stderr
