#!/bin/bash
# Issue 12 on a CPU: dlm with its defaults against llama-diffusion-cli with its defaults (neither side
# gets a thread flag), for the bundled tiny models and the 46M random models of both families, each
# family's recommended sampling and T 0. With --busy N, N busy loops share the cores during the runs
# (the situation dlm's one-thread rule for tiny models is for; only the tiny models run then). JSON under docs/bench/ (or $OUTDIR).
#   bash scripts/bench_cpu_defaults.sh [--busy 2] [--reps 5]
# Needs the llama.cpp sources of the installed llama-cpp-python (LLAMA_SRC, see bench_vs_llama_cpp.py).
set -eu
BUSY=0 REPS=5
while [ $# -gt 0 ]; do case $1 in --busy) BUSY=$2; shift 2;; --reps) REPS=$2; shift 2;; *) echo "unknown $1"; exit 2;; esac; done
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/bench}
OUTDIR=${OUTDIR:-docs/bench}
TAG=$([ "$BUSY" -gt 0 ] && echo "busy$BUSY" || echo idle)
S="--build-dir $BUILD ${LLAMA_SRC:+--llama-src $LLAMA_SRC} --threads 0 --reps $REPS"
ID="{% for message in messages %}{{ message['content'] }}{% endfor %}"
mkdir -p "$BUILD/models"
for m in tiny-llada tiny-dream; do  # the bench needs the identity template on both sides (same prompt)
  [ -f "$BUILD/models/$m-identity.gguf" ] || python3 -m gguf.scripts.gguf_new_metadata --force \
      --chat-template "$ID" "dlmcli/models/$m.gguf" "$BUILD/models/$m-identity.gguf" > /dev/null
done
pids=()
for _ in $(seq "$BUSY"); do (while :; do :; done) & pids+=($!); done
trap '[ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null' EXIT
uptime
python3 scripts/bench_vs_llama_cpp.py $S --model "$BUILD/models/tiny-llada-identity.gguf" --prompt-len 16 --gen-length 16 \
  --steps 16 --block-length 8 --schedules block,timestep --out "$OUTDIR/cpu-$TAG-tiny-llada.json"
python3 scripts/bench_vs_llama_cpp.py $S --model "$BUILD/models/tiny-dream-identity.gguf" --prompt-len 16 --gen-length 16 \
  --steps 16 --schedules timestep --algorithms entropy --samplings t0.2p0.95,t0 --out "$OUTDIR/cpu-$TAG-tiny-dream.json"
if [ "$BUSY" -gt 0 ]; then uptime; exit 0; fi  # shared cores: the tiny models are the question there
python3 scripts/bench_vs_llama_cpp.py $S --make-model small --schedules block,timestep --steps 16 --gen-length 224 \
  --out "$OUTDIR/cpu-$TAG-46m-llada.json"
python3 scripts/bench_vs_llama_cpp.py $S --make-model small-dream --schedules timestep --steps 16 --gen-length 224 \
  --algorithms entropy,origin --samplings t0.2p0.95,t0.2k40p0.95,t0 --reps 3 --out "$OUTDIR/cpu-$TAG-46m-dream.json"
uptime
