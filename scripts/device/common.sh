# Sourced by the device-session scripts (speed_*.sh: issues 12 and 13; kernel_*.sh: the C kernel) after
# they set SESSION: the folder under .device/ that carries their files. Paths and helpers.
set -u
P=$PWD/.device/${SESSION:?set SESSION before sourcing common.sh}  # carried: llama.cpp.tar.gz (trimmed sdist vendor/llama.cpp), pylib/
B=/tmp/dlmbench
export PYTHONUNBUFFERED=1 PYTHONPATH=$P/pylib:$PWD HF_HUB_OFFLINE=1
L=$B/llama-cuda/bin
M=$B/models/llada8b-shape-Q4_K_M.gguf  # the kernel sessions' model, on disk
COMMON="--llama-src $B/llama.cpp --build-dir $B --cuda --jobs 16 --quant Q4_K_M"
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }
left() { echo $(( ${BUDGET:-575} - ($(date +%s) - T0) )); }
build_kernel() {  # what pip install -e . does, without needing setuptools there
    gcc -O3 -ffp-contract=off -fno-trapping-math -fopenmp -shared -fPIC \
        "-I$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" dlmcli/engine/_rowscore.c \
        -o "dlmcli/engine/_rowscore$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    gcc -O3 -ffp-contract=off -fno-trapping-math -shared -fPIC \
        "-I$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" dlmcli/runtime/_abort.c \
        -o "dlmcli/runtime/_abort$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    python3 -c "from dlmcli.engine import scoring, _rowscore; print('dlm scoring:', scoring.kernel_name(), 'openmp', _rowscore.OPENMP)"
}
kernel_vs_old() {  # kernel_vs_old OUTFILE ARGS...: scoring alone, this tree's kernel and $P/old_rowscore.c's, interleaved
    local old=/tmp/dlm-old-kernel out=$1; shift
    rm -rf $old; mkdir -p $old/dlmcli/engine; cp -r dlmcli scripts $old/; cp $P/old_rowscore.c $old/dlmcli/engine/_rowscore.c
    (cd $old && build_kernel) || return 1
    for rep in 1 2; do
        for side in new old; do
            dir=$PWD; [ $side = old ] && dir=$old
            (cd $dir && python3 scripts/bench_scoring.py "$@" --out ${out%.json}-$side-$rep.json | grep -v "shifted=True")
        done
    done
}
models_in_ram() {  # the speed sessions' models: writing two 16 GB F16 files to disk took a whole call
    R=/dev/shm/dlmbench
    if [ "$(df -BG --output=avail /dev/shm 2>/dev/null | tail -1 | tr -dc 0-9)" -lt 70 ] 2>/dev/null; then
        mkdir -p /mnt/dlmram && { mountpoint -q /mnt/dlmram || mount -t tmpfs -o size=90g tmpfs /mnt/dlmram 2>/dev/null; } \
            && mountpoint -q /mnt/dlmram && R=/mnt/dlmram || R=$B/models
    fi
    mkdir -p $R
    ML=$R/llada8b-shape-Q4_K_M.gguf
    ML8=$R/llada8b-shape-Q8_0.gguf
    MLF=$R/llada8b-shape-f16.gguf
    MD=$R/dream7b-shape-Q4_K_M.gguf
    MDF=$R/dream7b-shape-f16.gguf
}
dream_side_args() {  # bench_vs_llama_cpp.py's Dream-7B side by side (timestep, 256 masks, 16 steps, one run)
    echo "$COMMON --model $MD --prompt-len 32 --gen-length 256 --steps 16 --schedules timestep --ngl 999 --threads 0 --reps 1 --warmup 0"
}
write_f16() {  # write_f16 llada8b|dream7b PATH: random weights with the real shapes
    [ -f "$2" ] || python3 -c "import sys; sys.path.insert(0, 'scripts'); import bench_vs_llama_cpp as b; from pathlib import Path; b.BIG_MODELS['$1'](Path('$2'))"
}
build_llama_and_f16() {  # call 1: unpack and build llama.cpp with CUDA while both F16 models are written (~240 s)
    mkdir -p $B; [ -d $B/llama.cpp ] || tar xzf $P/llama.cpp.tar.gz -C $B
    stamp "F16 models one after the other in the background; build llama.cpp"
    ( timeout 300 bash -c "$(declare -f write_f16); write_f16 llada8b $MLF && write_f16 dream7b $MDF" ) > $B/models.log 2>&1 &
    timeout 330 python3 scripts/bench_vs_llama_cpp.py $COMMON --make-model small --build-only 2>&1 | tail -2
    ls $L/llama-diffusion-cli $L/llama-quantize || exit 1
    # Not a bare `wait`: it would also wait for the tee of `exec > >(tee ...)`, which never ends (two
    # device calls hung there).
    stamp "wait for the F16 models"; wait $(jobs -p); cat $B/models.log; ls -la $R
}
machine_and_models() {  # call 1's start: what the machine is, this tree's kernel, llama.cpp, both Q4_K_M models
    stamp "machine; models in $R"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    lscpu | grep -E "Model name|^CPU\(s\)|Thread|L2|L3"; grep -o -m1 "avx512f" /proc/cpuinfo; free -g | head -2
    build_kernel || exit 1
    build_llama_and_f16
    stamp "quantize both at once"
    local Q=$L/llama-quantize
    ( timeout 200 $Q $MDF $MD Q4_K_M 8 > $B/q2.log 2>&1; rm -f $MDF ) &
    ( timeout 200 $Q $MLF $ML Q4_K_M 8 > $B/q1.log 2>&1; rm -f $MLF ) &
    wait $(jobs -p); tail -n1 $B/q1.log $B/q2.log; ls -la $R
}
need_build() {  # everything call 1 (speed_a.sh or final_a.sh) made; a cold machine lost it
    [ -x $L/llama-diffusion-cli ] && [ -f $ML ] && [ -f $MD ] || { echo "call 1's build is gone (cold machine): run call 1 again"; exit 3; }
}
