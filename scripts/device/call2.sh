#!/bin/bash
# Device call 2 (right after call 1, same machine): dlm vs llama-diffusion-cli side by side on the
# 8B-shaped Q4_K_M model, both schedules; then throughput against batch size and CFG.
set -u
P=$PWD/.device/perf
B=/tmp/dlmbench
export PYTHONUNBUFFERED=1 PYTHONPATH=$P/src:$P/pylib LLAMA_CPP_LIB_PATH=$B/llama-cuda/bin
S=$P/src/scripts
M=$B/models/llada8b-shape-Q4_K_M.gguf
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }
ls -la $M || exit 1
stamp "side by side"
timeout 330 python3 $S/bench_vs_llama_cpp.py --llama-src $B/llama.cpp --build-dir $B --cuda --model $M \
  --prompt-len 32 --gen-length 256 --steps 64 --block-length 32 --ngl 999 --threads 16 --reps ${REPS:-3} \
  --out $OUT/h100.json
stamp "batch sizes"
timeout 150 python3 $S/bench_batch.py -m $M --ngl 999 --sizes 1,2,4,8 --steps 16 --reps 2 --cfg --out $OUT/batch-h100.json
stamp end
