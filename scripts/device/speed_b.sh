#!/bin/bash
# Issue 12, device call 2 of 3 (same warm machine as speed_a.sh): side by side with llama-diffusion-cli,
# each side with its own default threads, every algorithm: Dream-7B shape at Dream's recommended
# sampling (dlm's Dream default) and T 0; LLaDA-8B shape at T 0 (LLaDA's recommended) and T 0.5. $OUT.
SESSION=speed; . scripts/device/common.sh; models_in_ram
exec > >(tee -a $OUT/log_b.txt) 2>&1
need_build; build_kernel || exit 1
export LLAMA_CPP_LIB_PATH=$L
stamp "Dream-7B shape: timestep, gen 256, 16 steps, defaults' threads"
timeout 300 python3 scripts/bench_vs_llama_cpp.py $COMMON --model $MD --prompt-len 32 --gen-length 256 --steps 16 \
  --schedules timestep --algorithms entropy,low-confidence,margin,random,origin --samplings t0.2p0.95,t0 --ngl 999 \
  --threads 0 --reps 1 --warmup 1 --ref-topk40 --out $OUT/dream7b.json
stamp "LLaDA-8B shape: block 32, gen 256, 32 steps, T 0, every algorithm ($(left) s left)"
timeout 170 python3 scripts/bench_vs_llama_cpp.py $COMMON --model $ML --prompt-len 32 --gen-length 256 --steps 32 \
  --schedules block --algorithms low-confidence,margin,entropy,random,origin --samplings t0 --ngl 999 --threads 0 \
  --reps 1 --warmup 0 --ref-topk40 --out $OUT/llada8b.json
stamp "LLaDA-8B shape: T 0.5 and T 0.5 top-p 0.95, low-confidence ($(left) s left)"
timeout $(left) python3 scripts/bench_vs_llama_cpp.py $COMMON --model $ML --prompt-len 32 --gen-length 256 --steps 32 \
  --schedules block --algorithms low-confidence --samplings t0.5,t0.5p0.95 --ngl 999 --threads 0 \
  --reps 1 --warmup 0 --out $OUT/llada8b-t05.json
stamp end
