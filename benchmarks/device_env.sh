# Sourced by the device scripts: results folder, the carried wheels (sinabs & co., .whl/) and
# this checkout on the Python path, a JIT cache of the call's own.
set -u -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/exodus-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
export EXODUS_JIT_CACHE=/tmp/exodus-cache
