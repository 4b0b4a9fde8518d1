#!/bin/bash
# Issue 12, device call 2 of 2 (same warm machine as speed_a.sh): dlm against llama-diffusion-cli side
# by side on the LLaDA-8B and Dream-7B shapes, every algorithm, temperature 0 and each family's
# recommended sampling, the reference with the same filters and with its default sampler. Results in $OUT.
. scripts/device/speed_common.sh
exec > >(tee -a $OUT/log_b.txt) 2>&1
[ -x $L/llama-diffusion-cli ] && [ -f $ML ] && [ -f $MD ] || { echo "call 1's build is gone (cold machine): run speed_a.sh again"; exit 3; }
build_kernel || exit 1
export LLAMA_CPP_LIB_PATH=$L
ALGS=low-confidence,margin,entropy,random,origin
stamp "torch.linspace on the GPU against dlm's float32 timesteps"
timeout 60 python3 -c "
import torch, numpy as np
from dlmcli.engine.schedule import timesteps
bad = [(n, e) for n in range(1, 400) for e in (1e-3, 0.01, 0.05, 0.1) if torch.linspace(1, e, n + 1, device='cuda').cpu().numpy().tobytes() != timesteps(n, e).tobytes()]
print('torch', torch.__version__, 'cuda linspace vs dlm timesteps: mismatches', len(bad), bad[:5])
"
stamp "Dream-7B shape: timestep, 32 steps, T 0 and Dream's recommended T 0.2 top-p 0.95"
timeout 330 python3 scripts/bench_vs_llama_cpp.py $COMMON --model $MD --prompt-len 32 --gen-length 256 --steps 32 \
  --schedules timestep --algorithms $ALGS --samplings t0,t0.2p0.95 --ngl 999 --threads 16 --reps 1 --ref-topk40 \
  --out $OUT/dream7b.json
stamp "LLaDA-8B shape: block 32, 64 steps, T 0 (LLaDA's recommended sampling)"
timeout 200 python3 scripts/bench_vs_llama_cpp.py $COMMON --model $ML --prompt-len 32 --gen-length 256 --steps 64 \
  --schedules block --algorithms $ALGS --samplings t0 --ngl 999 --threads 16 --reps 1 --ref-topk40 --out $OUT/llada8b.json
stamp end
