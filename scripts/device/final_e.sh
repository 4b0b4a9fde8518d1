#!/bin/bash
# Issue 12, device call 1 of 2 (session 6): build llama.cpp with CUDA and both 8B-shaped Q4_K_M models
# (in RAM, kept for final_f.sh on the same warm machine); then where a full-size Dream step's host time
# goes (scripts/host_profile.py), with this tree's kernel and with the same kernel built without its
# next-row prefetch (DLM_NO_PREFETCH), interleaved. $OUT.
SESSION=speed; . scripts/device/common.sh; models_in_ram
BUDGET=585
exec > >(tee -a $OUT/log_e.txt) 2>&1
machine_and_models
NOPF=/tmp/dlm-nopf; rm -rf $NOPF; mkdir -p $NOPF; cp -r dlmcli scripts $NOPF/
gcc -O3 -ffp-contract=off -fno-trapping-math -fopenmp -shared -fPIC -DDLM_NO_PREFETCH \
    "-I$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" dlmcli/engine/_rowscore.c \
    -o "$NOPF/dlmcli/engine/_rowscore$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')" || exit 1
export LLAMA_CPP_LIB_PATH=$L
CASES=t0:entropy,t0:low-confidence,t0:margin,t0.2p0.95:entropy,t0p0.95:entropy
for rep in 1 2; do
    for side in prefetch no-prefetch; do
        dir=$PWD; [ $side = no-prefetch ] && dir=$NOPF
        stamp "host profile, Dream-7B shape, 16 steps: $side ($rep) ($(left) s left)"
        (cd $dir && timeout 100 python3 scripts/host_profile.py -m $MD --gen-length 256 --steps 16 --cases $CASES \
            --out $OUT/host-profile-dream7b-$side-$rep.json)
    done
done
stamp end
