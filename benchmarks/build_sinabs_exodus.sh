#!/usr/bin/env bash
# On the GPU machine, after device_env.sh: builds sinabs-exodus 2.0 from its source distribution
# (.whl/sdist/, from prepare_wheelhouse.sh) as its users' `pip install` does, timed, and unpacks
# the wheel into /tmp/site beside sinabs: its package lives in sinabs' namespace (sinabs/exodus/),
# so `pip install --target` (which replaces whole top-level folders) cannot put it there. No build
# isolation (no internet there): torch, setuptools and wheel come from the machine.
# Usage: source benchmarks/device_env.sh; bash benchmarks/build_sinabs_exodus.sh  (prints the wall time;
# MAX_JOBS: compile jobs, default every core)
set -u -o pipefail
sdist=$(ls .whl/sdist/sinabs-exodus-*.tar.gz 2>/dev/null | head -1)
[ -n "$sdist" ] || { echo "sinabs-exodus: no source distribution in .whl/sdist (bash benchmarks/prepare_wheelhouse.sh)"; exit 1; }
rm -rf /tmp/sinabs-exodus && mkdir -p /tmp/sinabs-exodus && tar xzf "$sdist" -C /tmp/sinabs-exodus
start=$(date +%s.%N)
jobs=${MAX_JOBS:-$(nproc)}
(cd /tmp/sinabs-exodus/sinabs-exodus-* && MAX_JOBS=$jobs python3 -m pip wheel -q --no-build-isolation --no-deps \
  -w /tmp/sinabs-exodus/wheel . > /tmp/sinabs-exodus/build.log 2>&1) || { tail -20 /tmp/sinabs-exodus/build.log; exit 1; }
echo "sinabs-exodus build from source: $(python3 -c "import time; print(round(time.time() - $start, 1))") s wall, $jobs compile jobs on $(nproc) cores"
python3 -m zipfile -e /tmp/sinabs-exodus/wheel/sinabs_exodus-*.whl /tmp/site
python3 -c "import sinabs.exodus.layers as l; print('sinabs-exodus importable:', l.LIF.__module__)"
