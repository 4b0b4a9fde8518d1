#!/bin/bash
# Issue 12, device call 1 of 3: build llama.cpp with CUDA; write LLaDA-8B and Dream-7B shaped models
# in RAM (F16 -> Q8_0 / Q4_K_M, kept for calls 2 and 3 on the same warm machine); time the forward
# pass under the settings dlm controls (weights, flash attention) and host scoring alone. $OUT.
SESSION=speed; . scripts/device/common.sh; models_in_ram
exec > >(tee -a $OUT/log_a.txt) 2>&1
stamp "machine; models in $R"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
lscpu | grep -E "Model name|^CPU\(s\)"; free -g | head -2; df -h /tmp $R | tail -2
build_kernel || exit 1
build_llama_and_f16
stamp "quantize (three at once)"
Q=$L/llama-quantize
( timeout 200 $Q $MDF $MD Q4_K_M 6 > $B/q3.log 2>&1; rm -f $MDF ) &
( timeout 200 $Q $MLF $ML Q4_K_M 5 > $B/q1.log 2>&1 ) &
( timeout 200 $Q $MLF $ML8 Q8_0 5 > $B/q2.log 2>&1 ) &
wait $(jobs -p); tail -n1 $B/q1.log $B/q2.log $B/q3.log; ls -la $R
export LLAMA_CPP_LIB_PATH=$L
stamp "forward pass: weights x flash attention, LLaDA-8B shape canvas 288, Dream-7B shape canvas 296"
timeout 100 python3 scripts/bench_forward.py -m $ML -m $ML8 -m $MLF --canvas 288 --flash auto,on,off --threads 16 \
  --reps 5 --out $OUT/forward-llada.json
rm -f $MLF
timeout 40 python3 scripts/bench_forward.py -m $MD --canvas 296 --flash auto,on,off --threads 16 --reps 5 --out $OUT/forward-dream.json
timeout 40 python3 scripts/bench_forward.py -m $ML -m $ML8 --canvas 1040 --flash auto,off --threads 16 --reps 3 --out $OUT/forward-long.json
stamp "host scoring alone, 16 threads: every algorithm and sampling, both vocabularies"
timeout 60 python3 scripts/bench_scoring.py --cases t0,t0.2p0.95,t0p0.95,t0.5 --vocab-list 126464,152064 \
  --rows 256 --canvas 296 --threads 16 --reps 3 --out $OUT/scoring.json
stamp end
