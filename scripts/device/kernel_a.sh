#!/bin/bash
# C-kernel device session, call 1 of 2: build llama.cpp with CUDA and the 8B-shaped Q4_K_M model
# (kept in /tmp for call 2 on the same warm machine), then host scoring alone. Results in $OUT.
SESSION=perf; . scripts/device/common.sh
mkdir -p $B/models
stamp "machine"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
lscpu | grep -E "Model name|^CPU\(s\)|Thread|L2|L3"
build_kernel || exit 1
stamp "build llama.cpp (+ f16 model in the background)"
[ -d $B/llama.cpp ] || tar xzf $P/llama.cpp.tar.gz -C $B
( [ -f $B/models/llada8b-shape-f16.gguf ] || [ -f $M ] || python3 -c "import sys; sys.path.insert(0, 'scripts'); import bench_vs_llama_cpp as b; from pathlib import Path; b.write_llada8b_f16(Path('$B/models/llada8b-shape-f16.gguf'))" ) > $B/f16.log 2>&1 &
F16=$!
timeout 360 python3 scripts/bench_vs_llama_cpp.py $COMMON --make-model small --build-only 2>&1 | tail -5 || exit 1
wait $F16; cat $B/f16.log
stamp "quantize"
timeout 150 python3 scripts/bench_vs_llama_cpp.py $COMMON --make-model llada8b --build-only 2>&1 | tail -3
ls -la $M || exit 1
stamp "host scoring alone: C kernel vs numpy, threads"
timeout 100 python3 scripts/bench_scoring.py --rows 32,128,256 --threads 1,4,8,16 --reps 5 --variants dlm,numpy \
    --out $OUT/scoring-h100.json
stamp end
