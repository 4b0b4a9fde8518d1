#!/bin/bash
# Issue 12, device call 1 of 3 (sessions 5-6; of 2 in session 7, with final_g.sh): build llama.cpp with CUDA; write the LLaDA-8B and Dream-7B
# shaped models in RAM (F16 -> Q4_K_M, kept for calls 2 and 3 on the same warm machine); scoring
# alone with this tree's kernel against $P/old_rowscore.c's, when staged; then the LLaDA-8B side by
# side (block 32, gen 256, 32 steps, T 0: LLaDA's recommended sampling and dlm's default), every
# algorithm, each side with its own default threads. $OUT.
SESSION=speed; . scripts/device/common.sh; models_in_ram
BUDGET=585
exec > >(tee -a $OUT/log_a.txt) 2>&1
machine_and_models
if [ -f $P/old_rowscore.c ]; then  # a kernel change to measure: scoring alone, Dream's width, this tree's kernel and the old
    stamp "scoring alone, new kernel and old, 136 rows of 152,064 on 16 threads"
    for scale in 3 1.2; do  # rows as peaked as the bench's default, and as flat as a random-weight model's
        timeout 100 bash -c "$(declare -f build_kernel kernel_vs_old); P=$P; kernel_vs_old $OUT/scoring-vs-old-s$scale.json \
            --cases t0,t0.2p0.95,t0p0.95,t0.2k40p0.95 --vocab-list 152064 --rows 136 --canvas 296 --threads 16 --reps 5 --scale $scale"
    done
fi
export LLAMA_CPP_LIB_PATH=$L
stamp "LLaDA-8B shape: block 32, gen 256, 32 steps, T 0, every algorithm ($(left) s left)"
timeout $(( $(left) - 5 )) python3 scripts/bench_vs_llama_cpp.py $COMMON --model $ML --prompt-len 32 --gen-length 256 \
  --steps 32 --schedules block --algorithms low-confidence,margin,entropy,random,origin --samplings t0 --ngl 999 \
  --threads 0 --reps 1 --warmup 0 --ref-topk40 --out $OUT/llada8b.json
stamp end
