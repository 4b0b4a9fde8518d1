#!/bin/bash
# Issue 12, device call 1 of 2: build llama.cpp with CUDA, write LLaDA-8B and Dream-7B shaped models
# (F16 -> Q8_0 / Q4_K_M, kept in /tmp for call 2 on the same warm machine), time the forward pass
# under the settings dlm controls, host scoring alone, then the Dream-7B side by side in the time
# left. Results in $OUT.
. scripts/device/speed_common.sh
exec > >(tee -a $OUT/log_a.txt) 2>&1
mkdir -p $B/models
left() { echo $(( 575 - ($(date +%s) - T0) )); }
stamp "machine"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
lscpu | grep -E "Model name|^CPU\(s\)|Thread|L2|L3|NUMA node\(s\)"
build_kernel || exit 1
[ -d $B/llama.cpp ] || tar xzf $P/llama.cpp.tar.gz -C $B
stamp "F16 models in the background, build llama.cpp"
for shape in llada8b dream7b; do
  ( [ -f $B/models/$shape-shape-f16.gguf ] || timeout 400 python3 -c "import sys; sys.path.insert(0, 'scripts'); import bench_vs_llama_cpp as b; from pathlib import Path; b.BIG_MODELS['$shape'](Path('$B/models/$shape-shape-f16.gguf'))" ) > $B/$shape.log 2>&1 &
done
timeout 420 python3 scripts/bench_vs_llama_cpp.py $COMMON --make-model small --build-only 2>&1 | tail -3
ls $L/llama-diffusion-cli $L/llama-quantize || exit 1
stamp "wait for the F16 models"
wait; cat $B/llada8b.log $B/dream7b.log
stamp "quantize (three at once)"
Q=$L/llama-quantize
F=$B/models
( timeout 150 $Q $F/dream7b-shape-f16.gguf $MD Q4_K_M 6 > $B/q3.log 2>&1; rm -f $F/dream7b-shape-f16.gguf ) &
( timeout 150 $Q $F/llada8b-shape-f16.gguf $ML Q4_K_M 5 > $B/q1.log 2>&1 ) &
( timeout 150 $Q $F/llada8b-shape-f16.gguf $F/llada8b-shape-Q8_0.gguf Q8_0 5 > $B/q2.log 2>&1 ) &
wait; tail -1 $B/q1.log $B/q2.log $B/q3.log; ls -la $F
export LLAMA_CPP_LIB_PATH=$L
stamp "forward pass: weights x flash attention (LLaDA-8B shape, canvas 288), Dream-7B Q4_K_M"
timeout 90 python3 scripts/bench_forward.py -m $ML -m $F/llada8b-shape-Q8_0.gguf -m $F/llada8b-shape-f16.gguf -m $MD \
  --canvas 288 --flash auto,off --threads 16 --reps 5 --out $OUT/forward.json
rm -f $F/llada8b-shape-f16.gguf
stamp "host scoring alone, 16 threads: every algorithm and sampling, both vocabularies, rows shifted or not"
timeout 45 python3 scripts/bench_scoring.py --cases t0,t0.2p0.95,t0p0.95,t0.5 --vocab-list 126464,152064 \
  --rows 256 --canvas 296 --threads 16 --reps 3 --out $OUT/scoring.json
stamp "Dream-7B shape side by side: timestep, 16 steps, T 0 and Dream's recommended T 0.2 top-p 0.95 ($(left) s left)"
timeout $(left) python3 scripts/bench_vs_llama_cpp.py $COMMON --model $MD --prompt-len 32 --gen-length 256 --steps 16 \
  --schedules timestep --algorithms entropy,low-confidence,margin,random,origin --samplings t0.2p0.95,t0 --ngl 999 \
  --threads 16 --reps 1 --warmup 1 --ref-topk40 --out $OUT/dream7b.json
stamp end
