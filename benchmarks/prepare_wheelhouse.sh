#!/usr/bin/env bash
# Prepare .whl/: the pure-Python packages the benchmark and test suite need on a GPU machine
# without internet (torch, numpy, pytest, hypothesis, matplotlib are expected to be there).
# Usage: bash benchmarks/prepare_wheelhouse.sh [python-version, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  sinabs==3.1.3 nir==1.0.4 nirtorch==2.0.2 pbr spikingjelly==2.0.0 loguru
ls -la .whl
