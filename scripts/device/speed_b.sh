#!/bin/bash
# Issue 12, device call 2 of 2 (same warm machine as speed_a.sh): the LLaDA-8B side by side (every
# algorithm at T 0, LLaDA's recommended sampling), torch's GPU linspace against dlm's timesteps, and
# a second Dream-7B repetition in the time left. Results in $OUT.
. scripts/device/speed_common.sh
exec > >(tee -a $OUT/log_b.txt) 2>&1
left() { echo $(( 575 - ($(date +%s) - T0) )); }
[ -x $L/llama-diffusion-cli ] && [ -f $ML ] && [ -f $MD ] || { echo "call 1's build is gone (cold machine): run speed_a.sh again"; exit 3; }
build_kernel || exit 1
export LLAMA_CPP_LIB_PATH=$L
stamp "torch.linspace on the GPU against dlm's float32 timesteps"
timeout 60 python3 -c "
import torch, numpy as np
from dlmcli.engine.schedule import timesteps
bad = [(n, e) for n in range(1, 400) for e in (1e-3, 0.01, 0.05, 0.1) if torch.linspace(1, e, n + 1, device='cuda').cpu().numpy().tobytes() != timesteps(n, e).tobytes()]
print('torch', torch.__version__, 'cuda linspace vs dlm timesteps: mismatches', len(bad), bad[:5])
"
stamp "LLaDA-8B shape: block 32, 16 steps, T 0 (LLaDA's recommended sampling), every algorithm"
timeout 240 python3 scripts/bench_vs_llama_cpp.py $COMMON --model $ML --prompt-len 32 --gen-length 256 --steps 16 \
  --schedules block --algorithms low-confidence,margin,entropy,random,origin --samplings t0 --ngl 999 --threads 16 \
  --reps 1 --ref-topk40 --out $OUT/llada8b.json
stamp "Dream-7B again, reversed order ($(left) s left)"
timeout $(left) python3 scripts/bench_vs_llama_cpp.py $COMMON --model $MD --prompt-len 32 --gen-length 256 --steps 16 \
  --schedules timestep --algorithms entropy,low-confidence,margin --samplings t0.2p0.95,t0 --ngl 999 \
  --threads 16 --reps 2 --warmup 0 --ref-topk40 --out $OUT/dream7b-2.json
stamp end
