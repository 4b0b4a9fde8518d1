#!/bin/bash
# Issue 12, device call 0: build llama.cpp with CUDA (kept in $OUT as a tarball, so that later calls
# can carry it instead of rebuilding), then where the host time of a Dream-width step goes
# (scripts/host_profile.py on a 2-layer model with Dream's vocabulary) and the kernel alone. $OUT.
SESSION=speed; . scripts/device/common.sh
exec > >(tee -a $OUT/log_probe.txt) 2>&1
stamp "machine"; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400 | grep -o "Model name.*\|CPU(s).*\|avx512[a-z]*" | sort -u | tr '\n' ' '; echo
build_kernel || exit 1
mkdir -p $B; [ -d $B/llama.cpp ] || tar xzf $P/llama.cpp.tar.gz -C $B
stamp "build llama.cpp"
timeout 330 python3 scripts/bench_vs_llama_cpp.py $COMMON --make-model small --build-only 2>&1 | tail -2
ls $L/llama-diffusion-cli || exit 1
( cd $L/.. && tar czf $OUT/llama-cuda-bin.tar.gz bin/*.so* bin/llama-diffusion-cli bin/llama-quantize ); ls -la $OUT/llama-cuda-bin.tar.gz
export LLAMA_CPP_LIB_PATH=$L
stamp "2-layer model with Dream's vocabulary (F16)"
MD2=/dev/shm/dream-vocab-2l.gguf
timeout 120 python3 -c "
import sys; sys.path.insert(0, 'scripts'); import bench_vs_llama_cpp as b
from tools.ggufgen import write_random_gguf
write_random_gguf('$MD2', 'dream', seed=0, n_layer=2, n_embd=3584, n_head=28, n_head_kv=4, n_ff=18944, n_vocab=152064,
                  context_length=4096, dtype='f16', chat_template=b.IDENTITY_TEMPLATE, name='dream-vocab-2l')"
ls -la $MD2
stamp "host profile, 16 threads (default)"
timeout 120 python3 scripts/host_profile.py -m $MD2 --gen-length 256 --steps 16 \
  --cases t0:low-confidence,t0:entropy,t0:margin,t0.2p0.95:entropy,t0.2p0.95:low-confidence,t0p0.95:entropy,t0:random,t0.2p0.95:origin --out $OUT/host-profile.json
stamp "kernel alone, 16 threads"
timeout 90 python3 scripts/bench_scoring.py --cases t0,t0.2p0.95,t0p0.95 --vocab-list 126464,152064 \
  --rows 256,128 --canvas 296 --threads 16 --reps 5 --scale 1.2 --out $OUT/scoring.json 2>&1 | grep -v "shifted=True"
stamp end
