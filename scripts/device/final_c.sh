#!/bin/bash
# Issue 12, device call 3 of 3 (same warm machine): where a full-size Dream step's host time goes
# (scripts/host_profile.py: the kernel's calls against Step.sampling_s), and the LLaDA-8B shape at
# T 0.5 with and without top-p 0.95 against llama-diffusion-cli. $OUT.
SESSION=speed; . scripts/device/common.sh; models_in_ram
BUDGET=400
exec > >(tee -a $OUT/log_c.txt) 2>&1
need_build; build_kernel || exit 1
export LLAMA_CPP_LIB_PATH=$L
stamp "host profile, Dream-7B shape, 16 steps"
timeout 150 python3 scripts/host_profile.py -m $MD --gen-length 256 --steps 16 \
  --cases t0:entropy,t0:low-confidence,t0.2p0.95:entropy,t0p0.95:entropy --out $OUT/host-profile-dream7b.json
stamp "LLaDA-8B shape: T 0.5 and T 0.5 top-p 0.95, low-confidence ($(left) s left)"
timeout $(( $(left) - 5 )) python3 scripts/bench_vs_llama_cpp.py $COMMON --model $ML --prompt-len 32 --gen-length 256 \
  --steps 32 --schedules block --algorithms low-confidence --samplings t0.5,t0.5p0.95 --ngl 999 --threads 0 \
  --reps 1 --warmup 0 --out $OUT/llada8b-t05.json
stamp end
