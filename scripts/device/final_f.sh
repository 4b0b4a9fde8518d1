#!/bin/bash
# Issue 12, device call 2 of 2 (session 6, same warm machine as final_e.sh): the Dream-7B shape
# (timestep, gen 256, 16 steps), every algorithm, at Dream's recommended sampling (T 0.2, top-p 0.95),
# T 0 with top-p 1 and T 0 with dlm's default top-p 0.95, against llama-diffusion-cli's default
# sampler (its same-filter side, 230-1,900 ms a step, was measured in final_b.sh); then the LLaDA-8B
# shape at T 0, every algorithm, against both llama.cpp sides, as time allows. $OUT.
SESSION=speed; . scripts/device/common.sh; models_in_ram
BUDGET=330
exec > >(tee -a $OUT/log_f.txt) 2>&1
need_build; build_kernel || exit 1
export LLAMA_CPP_LIB_PATH=$L
D=$(dream_side_args)
stamp "Dream-7B shape: every algorithm, three samplings, dlm and llama.cpp's default sampler"
timeout 200 python3 scripts/bench_vs_llama_cpp.py $D --algorithms entropy,low-confidence,margin,random,origin \
  --samplings t0.2p0.95,t0,t0p0.95 --ref-topk40 --no-ref-same --out $OUT/dream7b-topk40.json
stamp "LLaDA-8B shape: block 32, gen 256, 32 steps, T 0, every algorithm ($(left) s left)"
timeout $(( $(left) - 5 )) python3 scripts/bench_vs_llama_cpp.py $COMMON --model $ML --prompt-len 32 --gen-length 256 \
  --steps 32 --schedules block --algorithms low-confidence,margin,entropy,random,origin --samplings t0 --ngl 999 \
  --threads 0 --reps 1 --warmup 0 --ref-topk40 --out $OUT/llada8b.json
stamp end
