#!/usr/bin/env bash
# The checks that need an NVIDIA GPU and CuPy, in one run: the GPU test cases (NCCL's among
# them), short GPU training runs of the seq2seq and captioning tools, the phases of one eager
# step and the cost of a launch, and the language-model benchmark on the GPU (with PyTorch's
# CUDA figure where torch sees the GPU). Run from the repository root:
#
#   bash tools/gpu_check.sh [LOG_DIR]     # logs go to LOG_DIR (default runs/gpu_check)
#
# It first checks what the steps need (a GPU and its driver, the Python packages, CuPy able to
# compile and run a kernel, NCCL) and, if anything is missing, says what and how to install it
# and exits with 2 before any step. Then it exits non-zero when any step fails; every step still
# runs, so one failure shows all of them.
set -uo pipefail
export PYTHONUNBUFFERED=1
log=${1:-runs/gpu_check}

missing=()
if ! command -v nvidia-smi >/dev/null 2>&1; then
  missing+=("no NVIDIA driver: nvidia-smi is not installed, so this machine has no usable GPU")
elif ! nvidia-smi -L >/dev/null 2>&1; then
  missing+=("no GPU: nvidia-smi -L fails ($(nvidia-smi -L 2>&1 | head -n 1))")
fi
# what the steps import: the package's dependencies, CuPy and the dev extra's test tools and mpi4py
absent=()
for module in numpy tqdm matplotlib graphviz cupy pytest hypothesis mpi4py; do
  python3 -c "import $module" >/dev/null 2>&1 || absent+=("$module")
done
if [ ${#absent[@]} != 0 ]; then
  missing+=("Python packages ${absent[*]}: pip install -e '.[dev,cuda12]' (or cuda13) installs them all")
fi
if [ ${#missing[@]} = 0 ]; then
  # models/ and tools/ import as tinygrad_rnn.models and tinygrad_rnn.tools only once installed;
  # every dependency is present (checked above), so the checkout alone needs installing
  if ! python3 -c "import tinygrad_rnn.models, tinygrad_rnn.tools" >/dev/null 2>&1; then
    python3 -m pip install -q --no-deps --no-build-isolation -e . || missing+=("cannot pip install -e . here")
  fi
  problem=$(python3 -c "import tinygrad_rnn; tinygrad_rnn.cuda.check()" 2>&1 | tail -n 1)
  [ -z "$problem" ] || missing+=("${problem#RuntimeError: }")
  if ! python3 -c "from cupy.cuda import nccl; assert nccl.available" >/dev/null 2>&1; then
    missing+=("NCCL: pip install nvidia-nccl-cu12 (or nvidia-nccl-cu13, as CuPy's CUDA)")
  fi
fi
if [ ${#missing[@]} != 0 ]; then
  echo "gpu_check: cannot run; missing:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 2
fi

# CuPy compiles each kernel at its first call and caches the binary here; one folder for every
# step, so only the first step that calls a kernel pays for compiling it
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-$HOME/.cupy/kernel_cache}
mkdir -p "$log" "$CUPY_CACHE_DIR"
scratch=$(mktemp -d)
failed=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to LOG_DIR/NAME.log
    local name=$1 limit=$2 began=$SECONDS cached
    shift 2
    cached=$(find "$CUPY_CACHE_DIR" -type f | wc -l)
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$log/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - began)) s; cached kernels $cached -> $(find "$CUPY_CACHE_DIR" -type f | wc -l)"
    [ "$rc" = 0 ] || failed=1
}

# bench_lm adds PyTorch's worker whenever torch imports, and that worker asks for CUDA: hide a
# torch without CUDA from it (find_spec answers None for a module set to None)
if python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" >/dev/null 2>&1; then
  torch_note="PyTorch with CUDA: its figure is measured too"
  hide_torch=""
else
  torch_note="no PyTorch with CUDA: tinygrad_rnn alone"
  hide_torch="sys.modules['torch'] = None; "
fi

step env 60 python3 -c "import cupy, numpy, sys; d = cupy.cuda.runtime.getDeviceProperties(0); \
print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__, d['name'].decode(), \
'- cache', '$CUPY_CACHE_DIR', '- $torch_note')"
# the limit allows for a cold kernel cache, where CuPy compiles every kernel of every test first
step pytest 600 python3 -m pytest -q -p no:cacheprovider -m gpu -rs
step seq2seq 120 python3 tools/train_seq2seq.py --task addition --model peeky --reverse --epochs 2 --count 20000 \
    --test-size 1000 --examples 2 --device gpu --no-progress --out "$scratch/seq2seq"
step caption 120 python3 tools/train_caption.py --epochs 1 --train-size 5000 --test-size 200 --examples 2 \
    --device gpu --no-progress --out "$scratch/caption"
step bench_phases 180 python3 tools/bench_phases.py --device gpu --iters 10
step bench_lm 180 python3 -c "import runpy, sys; ${hide_torch}sys.argv = ['tools/bench_lm.py'] + sys.argv[1:]; \
runpy.run_path('tools/bench_lm.py', run_name='__main__')" --device gpu --rounds 1 --iters 20 --memory-iters 0
rm -rf "$scratch"
exit $failed
