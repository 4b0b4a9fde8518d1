#!/bin/bash
# Issue 12, device call 4 (same warm machine): filtered rows split over more threads (a filtered row
# costs several times a greedy one): Dream-7B shape, origin and entropy at T 0 top-p 0.95 and origin
# at T 0.2 top-p 0.95, dlm against llama-diffusion-cli's default sampler. $OUT.
SESSION=speed; . scripts/device/common.sh; models_in_ram
BUDGET=400
exec > >(tee -a $OUT/log_d.txt) 2>&1
need_build; build_kernel || exit 1
export LLAMA_CPP_LIB_PATH=$L
D=$(dream_side_args)
timeout 200 python3 scripts/bench_vs_llama_cpp.py $D --algorithms origin,entropy,low-confidence --samplings t0p0.95,t0.2p0.95 --ref-topk40 \
  --no-ref-same --out $OUT/dream7b-threads.json
stamp end
