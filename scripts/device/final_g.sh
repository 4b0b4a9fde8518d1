#!/bin/bash
# Issue 12, device call 2 of 2 (session 7, same warm machine as final_a.sh, which built llama.cpp and
# both models and timed the kernel against session 6's): the Dream-7B shape (timestep, gen 256, 16
# steps), every algorithm at Dream's recommended sampling, T 0 with top-p 1 and T 0 with dlm's default
# top-p 0.95, against llama-diffusion-cli's default sampler (its same-filter side was 3-35x slower than
# dlm in session 6 and is not re-run); then where a Dream step's host time goes in process. $OUT.
SESSION=speed; . scripts/device/common.sh; models_in_ram
BUDGET=585
exec > >(tee -a $OUT/log_g.txt) 2>&1
need_build; build_kernel || exit 1
export LLAMA_CPP_LIB_PATH=$L
D=$(dream_side_args)
stamp "Dream-7B shape: every algorithm, three samplings, dlm and llama.cpp's default sampler"
timeout 230 python3 scripts/bench_vs_llama_cpp.py $D --algorithms entropy,low-confidence,margin,random,origin \
  --samplings t0.2p0.95,t0,t0p0.95 --ref-topk40 --no-ref-same --out $OUT/dream7b-topk40.json
for rep in 1 2; do
    stamp "host profile, Dream-7B shape, 16 steps ($rep) ($(left) s left)"
    timeout 100 python3 scripts/host_profile.py -m $MD --gen-length 256 --steps 16 \
        --cases t0:entropy,t0:low-confidence,t0:margin,t0.2p0.95:entropy,t0.2p0.95:low-confidence,t0p0.95:entropy \
        --out $OUT/host-profile-dream7b-$rep.json
done
stamp "host profile, LLaDA-8B shape, its default schedule, 32 steps ($(left) s left)"
timeout $(( $(left) - 5 )) python3 scripts/host_profile.py -m $ML --gen-length 256 --steps 32 \
    --cases t0:entropy,t0:low-confidence --out $OUT/host-profile-llada8b.json
stamp end
