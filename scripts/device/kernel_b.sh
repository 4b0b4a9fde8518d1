#!/bin/bash
# C-kernel device session, call 2 of 2 (same warm machine as kernel_a.sh): dlm against
# llama-diffusion-cli side by side at 16 threads (dlm with the C kernel and with numpy scoring), then 8,
# then batches and CFG. Results in $OUT.
SESSION=perf; . scripts/device/common.sh
[ -x $L/llama-diffusion-cli ] && [ -f $M ] || { echo "call 1's build is gone (cold machine): run kernel_a.sh again"; exit 3; }
build_kernel || exit 1
export LLAMA_CPP_LIB_PATH=$L
stamp "side by side, 16 threads"
timeout 280 python3 scripts/bench_vs_llama_cpp.py $COMMON --model $M --prompt-len 32 --gen-length 256 --steps 64 \
  --block-length 32 --ngl 999 --threads 16 --reps 4 --max-seconds 150 --ref-topk40 --dlm-numpy --out $OUT/h100.json
stamp "side by side, 8 threads"
timeout 120 python3 scripts/bench_vs_llama_cpp.py $COMMON --model $M --prompt-len 32 --gen-length 256 --steps 64 \
  --block-length 32 --ngl 999 --threads 8 --reps 2 --out $OUT/h100-8threads.json
stamp "batch sizes and CFG"
timeout 100 python3 scripts/bench_batch.py -m $M --ngl 999 --sizes 1,2,4,8 --steps 16 --reps 2 --cfg --out $OUT/batch-h100.json
stamp end
