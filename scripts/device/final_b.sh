#!/bin/bash
# Issue 12, device call 2 of 3 (same warm machine as final_a.sh): the Dream-7B shape (timestep,
# gen 256, 16 steps), every algorithm, each side with its own default threads: Dream's recommended
# sampling (T 0.2, top-p 0.95: dlm's Dream default) and T 0 with top-p 1, against llama-diffusion-cli
# with the same filters and with its default sampler; then T 0 with dlm's default top-p 0.95 (what
# `dlm generate -m dream -t 0` runs) against its default sampler (same filters for entropy only). $OUT.
SESSION=speed; . scripts/device/common.sh; models_in_ram
BUDGET=585
exec > >(tee -a $OUT/log_b.txt) 2>&1
need_build; build_kernel || exit 1
export LLAMA_CPP_LIB_PATH=$L
D=$(dream_side_args)
stamp "Dream-7B shape: T 0.2 top-p 0.95 and T 0, every algorithm, three sides"
timeout 330 python3 scripts/bench_vs_llama_cpp.py $D --algorithms entropy,low-confidence,margin,random,origin \
  --samplings t0.2p0.95,t0 --ref-topk40 --out $OUT/dream7b.json
stamp "Dream-7B shape: T 0 top-p 0.95 (dlm's Dream default at -t 0), entropy, three sides ($(left) s left)"
timeout $(( $(left) - 100 )) python3 scripts/bench_vs_llama_cpp.py $D --algorithms entropy --samplings t0p0.95 --ref-topk40 \
  --out $OUT/dream7b-t0p095-entropy.json
stamp "the other algorithms at T 0 top-p 0.95: dlm and the default sampler ($(left) s left)"
timeout $(( $(left) - 5 )) python3 scripts/bench_vs_llama_cpp.py $D --algorithms low-confidence,margin,random,origin \
  --samplings t0p0.95 --ref-topk40 --no-ref-same --out $OUT/dream7b-t0p095.json
stamp end
