#!/bin/bash
# One device call (from the repo root there, files under .device/perf): build llama.cpp with CUDA,
# write the LLaDA-8B-shaped Q4_K_M model, check import orders, time dlm against llama-diffusion-cli
# side by side, batches, and host scoring alone. Each stage has its own time limit; results go to $OUT.
set -u
P=$PWD/.device/perf
B=/tmp/dlmbench
export PYTHONUNBUFFERED=1 PYTHONPATH=$P/src:$P/pylib
S=$P/src/scripts
L=$B/llama-cuda/bin
M=$B/models/llada8b-shape-Q4_K_M.gguf
COMMON="--llama-src $B/llama.cpp --build-dir $B --cuda --jobs 16 --quant Q4_K_M"
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }
mkdir -p $B/models

stamp "build (+ f16 model in the background)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
[ -d $B/llama.cpp ] || tar xzf $P/llama.cpp.tar.gz -C $B
( [ -f $B/models/llada8b-shape-f16.gguf ] || [ -f $M ] || python3 -c "import sys; sys.path.insert(0, '$S'); import bench_vs_llama_cpp as b; from pathlib import Path; b.write_llada8b_f16(Path('$B/models/llada8b-shape-f16.gguf'))" ) > $B/f16.log 2>&1 &
F16=$!
timeout 330 python3 $S/bench_vs_llama_cpp.py $COMMON --make-model small --build-only || exit 1
wait $F16; cat $B/f16.log

stamp "quantize (background) + import orders"
( timeout 200 python3 $S/bench_vs_llama_cpp.py $COMMON --make-model llada8b --build-only > $B/quant.log 2>&1 ) &
Q=$!
export LLAMA_CPP_LIB_PATH=$L
timeout 110 python3 $S/check_import_order.py -m $B/models/bench-small.gguf --ngl 999 --timeout 30 --dump $B/v | tee $OUT/import_order.txt
stamp "which copy each library bound to (LD_DEBUG), llama_cpp first (00) vs numpy first (01)"
for v in 00 01; do
  LD_DEBUG=bindings LD_DEBUG_OUTPUT=$B/ld$v timeout 40 python3 $B/v/$v.py > /dev/null 2>&1
  echo "-- variant $v"; cat $B/ld$v.* | grep -E "_ZNSo9_M_insertIlEERSoT_|_ZNSt7num_putIcSt19ostreambuf_iteratorIcSt11char_traitsIcEEE2idE" \
    | sed -E 's/^ *[0-9]+: *//; s/\[[0-9]+\]//g' | sort | uniq -c | head -12
done
echo "-- libstdc++ code exported by libggml-cuda.so (defined dynamic symbols in namespace std)"
nm -D --defined-only $L/libggml-cuda.so | grep -c " _ZNS[tiaod]" ; nm -D --defined-only $L/libggml-cuda.so | grep -E "_ZNSo9_M_insertIlEERSoT_|num_putIcSt19ostreambuf_iteratorIcSt11char_traitsIcEEE2idE|_ZNSt6locale"| head
readelf -W --dyn-syms $L/libggml-cuda.so | grep -E "_ZNSo9_M_insertIlEERSoT_$|num_putIcSt19ostreambuf_iteratorIcSt11char_traitsIcEEE2idE$"
wait $Q; cat $B/quant.log; ls -la $M || exit 1

stamp "side by side on the 8B-shaped model"
timeout 220 python3 $S/bench_vs_llama_cpp.py $COMMON --model $M --prompt-len 32 --gen-length 256 --steps 64 \
  --block-length 32 --ngl 999 --threads 16 --reps 5 --max-seconds 95 --out $OUT/h100.json
stamp "batch sizes and CFG"
timeout 90 python3 $S/bench_batch.py -m $M --ngl 999 --sizes 1,2,4,8 --steps 16 --reps 2 --cfg --out $OUT/batch-h100.json
stamp "host scoring alone"
timeout 60 python3 $S/bench_scoring.py --rows 32,128,256 --threads 1,8,16 --chunks 2048 --reps 3 --variants dlm,gather --ops 16 --out $OUT/scoring-h100.json
stamp end
