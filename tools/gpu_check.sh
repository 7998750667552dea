#!/usr/bin/env bash
# The checks that need an NVIDIA GPU and CuPy, in one run: the GPU test cases (NCCL's among
# them), short GPU training runs of the seq2seq and captioning tools, the phases of one eager
# step and the cost of a launch, and the language-model benchmark on the GPU (with PyTorch's
# CUDA figure where torch sees the GPU). Run from the repository root:
#
#   bash tools/gpu_check.sh [LOG_DIR]     # logs go to LOG_DIR (default runs/gpu_check)
#
# Exits non-zero when any step fails; every step still runs, so one failure shows all of them.
set -uo pipefail
export PYTHONUNBUFFERED=1
# models/ and tools/ import as tinygrad_rnn.models and tinygrad_rnn.tools only once installed
if ! python3 -c "import tinygrad_rnn.models, tinygrad_rnn.tools" 2>/dev/null; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . || { echo "gpu_check: cannot install the checkout"; exit 1; }
fi
log=${1:-runs/gpu_check}
scratch=$(mktemp -d)
mkdir -p "$log"
failed=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to LOG_DIR/NAME.log
    local name=$1 limit=$2 began=$SECONDS
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$log/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - began)) s"
    [ "$rc" = 0 ] || failed=1
}

step env 60 python3 -c "import cupy, numpy, sys; d = cupy.cuda.runtime.getDeviceProperties(0); \
print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__, d['name'].decode())"
step pytest 300 python3 -m pytest -q -p no:cacheprovider -m gpu -rs
step seq2seq 120 python3 tools/train_seq2seq.py --task addition --model peeky --reverse --epochs 2 --count 20000 \
    --test-size 1000 --examples 2 --device gpu --no-progress --out "$scratch/seq2seq"
step caption 120 python3 tools/train_caption.py --epochs 1 --train-size 5000 --test-size 200 --examples 2 \
    --device gpu --no-progress --out "$scratch/caption"
step bench_phases 180 python3 tools/bench_phases.py --device gpu --iters 10
step bench_lm 180 python3 tools/bench_lm.py --device gpu --rounds 1 --iters 20 --memory-iters 0
rm -rf "$scratch"
exit $failed
