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
  sinabs==3.1.3 nir==1.0.4 nirtorch==2.0.2 pbr spikingjelly==2.0.0 loguru==0.7.3
ls -la .whl
# sinabs-exodus 2.0 as its source distribution (its only form on PyPI): the GPU machine builds it
# as its users' `pip install` does (benchmarks/build_sinabs_exodus.sh). pip cannot download it
# without torch (its setup.py imports torch), so it is fetched from PyPI's index and checked.
mkdir -p .whl/sdist
sdist=sinabs-exodus-2.0.0.tar.gz
[ -f .whl/sdist/$sdist ] || curl -sSfL -o .whl/sdist/$sdist \
  "https://files.pythonhosted.org/packages/50/a2/1b0deb93e6231bc91aa555d2e25f5a27f7a434f1897864880639e73f629d/$sdist"
echo "4d4e61da73aa7031a0b6be030afb9035a120b15dacfa9e034ff18006cefd37a5  .whl/sdist/$sdist" | sha256sum -c -
