#!/bin/bash
# Device call 1 (from the repo root there): build llama.cpp with CUDA, write the 8B-shaped model,
# check import orders, time host scoring alone. Everything under /tmp/dlmbench is reused by call 2.
set -u
P=$PWD/.device/perf
B=/tmp/dlmbench
export PYTHONUNBUFFERED=1 PYTHONPATH=$P/src:$P/pylib
mkdir -p $B/models
S=$P/src/scripts
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

stamp info
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc; lscpu | grep -E "Model name|^L2|^L3" ; grep -o -w -E "avx512f|avx2" /proc/cpuinfo | sort | uniq -c
python3 -c "import sys, numpy; print(sys.version); print('numpy', numpy.__version__, numpy.__file__)"
ls "$(python3 -c 'import numpy,os;print(os.path.dirname(os.path.dirname(numpy.__file__)))')/numpy.libs"
which cuda-gdb gdb

stamp "f16 model (background) + build"
[ -d $B/llama.cpp ] || tar xzf $P/llama.cpp.tar.gz -C $B
( [ -f $B/models/llada8b-shape-f16.gguf ] || [ -f $B/models/llada8b-shape-Q4_K_M.gguf ] || \
  python3 -c "import sys; sys.path.insert(0, '$S'); import bench_vs_llama_cpp as b; from pathlib import Path; b.write_llada8b_f16(Path('$B/models/llada8b-shape-f16.gguf'))" ) > $B/f16.log 2>&1 &
F16=$!
timeout 420 python3 $S/bench_vs_llama_cpp.py --llama-src $B/llama.cpp --build-dir $B --cuda --jobs 16 --make-model small --quant Q4_K_M --build-only
stamp "build done rc=$?"; ls $B/llama-cuda/bin
ldd $B/llama-cuda/bin/libggml-cuda.so | grep -v -E "^\s*(linux-vdso|/lib64)" ; ldd $B/llama-cuda/bin/libggml-cpu.so | grep -E "omp|stdc"

stamp "import orders (small model, all layers on the GPU)"
L=$B/llama-cuda/bin
export LLAMA_CPP_LIB_PATH=$L
timeout 150 python3 $S/check_import_order.py -m $B/models/bench-small.gguf --ngl 999 --timeout 40 --dump $B/variants
stamp "import orders done rc=$?"
if command -v cuda-gdb >/dev/null; then
  timeout 60 cuda-gdb -q -batch -ex run -ex bt -ex "info threads" --args python3 $B/variants/01.py 2>&1 | grep -v -E "^\[(New|Thread .* exited)" | tail -60
fi

stamp "wait for f16"
wait $F16; cat $B/f16.log
stamp quantize
timeout 200 python3 $S/bench_vs_llama_cpp.py --llama-src $B/llama.cpp --build-dir $B --cuda --jobs 16 --make-model llada8b --quant Q4_K_M --build-only
stamp "quantize done rc=$?"; ls -la $B/models

stamp "host scoring alone"
timeout 90 python3 $S/bench_scoring.py --rows 32,128,256 --threads 1,4,8,16 --chunks 512,2048 --reps 5 --variants dlm,sum32,inplace --out $OUT/scoring.json
stamp end
