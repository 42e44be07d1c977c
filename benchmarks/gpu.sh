#!/usr/bin/env bash
# Every loss step against the bandwidth floor, on JAX and on TensorFlow, in one command for a GPU machine.
#
#   bash benchmarks/gpu.sh                 # 2^26 float32 elements (the GPU targets are set at this size)
#   bash benchmarks/gpu.sh --size 20       # 2^20: a quick run on a CPU (the test suite runs it so)
#
# It runs benchmarks/loss_speed.py once per backend; a backend that cannot be imported (TensorFlow is not on
# every GPU machine) is skipped with a line saying so. Targets against the floor (read y_true and y_pred, write
# one array): 1.2x with a fixed alpha and for every factory, 1.5x with a learned alpha and scale; each run ends
# with its table of checks. Further options go to loss_speed.py (--repeats, --calls, --only, --clock). Set
# PYTHON to choose the interpreter (default: python3). Needs keras and numpy; the checkout is put on PYTHONPATH.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-python3}"
size=26
passed=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --size) size="$2"; shift 2 ;;
        --size=*) size="${1#--size=}"; shift ;;
        *) passed+=("$1"); shift ;;
    esac
done
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

for backend in jax tensorflow; do
    echo "=== $backend, 2^$size elements"
    if ! why="$("$python" -c "import $backend" 2>&1)"; then
        echo "skipped: $backend cannot be imported here ($(printf '%s\n' "$why" | tail -n 1))"
        echo
        continue
    fi
    KERAS_BACKEND="$backend" "$python" "$here/loss_speed.py" --size "$size" "${passed[@]+"${passed[@]}"}"
    echo
done
