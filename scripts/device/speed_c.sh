#!/bin/bash
# Issues 12 and 13, device call 3 of 3 (same warm machine): `dlm serve` under load on the LLaDA-8B
# shape, passes shared or not, short and long answers; then torch's GPU linspace against dlm's
# timesteps. $OUT.
SESSION=speed; . scripts/device/common.sh; models_in_ram
exec > >(tee -a $OUT/log_c.txt) 2>&1
need_build; build_kernel || exit 1
export LLAMA_CPP_LIB_PATH=$L
stamp "serve load, short answers: 64 tokens, 16 steps"
timeout 200 python3 scripts/serve_load.py -m $ML --server-args "--ngl -1" --concurrency 1,4,16,32 \
  --requests 2 --max-tokens 64 --steps 16 --max-batch 32 --json $OUT/serve-short.json
stamp "serve load, long answers: 256 tokens, 32 steps ($(left) s left)"
timeout $(( $(left) - 40 )) python3 scripts/serve_load.py -m $ML --server-args "--ngl -1" --concurrency 1,4,16 \
  --requests 2 --max-tokens 256 --steps 32 --max-batch 16 --json $OUT/serve-long.json
stamp "torch.linspace on the GPU against dlm's float32 timesteps"
timeout 30 python3 -c "
import torch
from dlmcli.engine.schedule import timesteps
bad = [(n, e) for n in range(1, 400) for e in (1e-3, 0.01, 0.05, 0.1) if torch.linspace(1, e, n + 1, device='cuda').cpu().numpy().tobytes() != timesteps(n, e).tobytes()]
print('torch', torch.__version__, 'cuda linspace vs dlm timesteps: mismatches', len(bad), bad[:5])
"
stamp end
