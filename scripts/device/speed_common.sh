# Sourced by speed_a.sh / speed_b.sh (issue 12's device session): paths and helpers.
set -u
P=$PWD/.device/speed           # carried: llama.cpp.tar.gz (trimmed sdist vendor/llama.cpp), pylib/
B=/tmp/dlmbench
export PYTHONUNBUFFERED=1 PYTHONPATH=$P/pylib:$PWD
L=$B/llama-cuda/bin
ML=$B/models/llada8b-shape-Q4_K_M.gguf
MD=$B/models/dream7b-shape-Q4_K_M.gguf
COMMON="--llama-src $B/llama.cpp --build-dir $B --cuda --jobs 16 --quant Q4_K_M"
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }
build_kernel() {  # what pip install -e . does, without needing setuptools there
    gcc -O3 -ffp-contract=off -fno-trapping-math -fopenmp -shared -fPIC \
        "-I$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" dlmcli/engine/_rowscore.c \
        -o "dlmcli/engine/_rowscore$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    python3 -c "from dlmcli.engine import scoring, _rowscore; print('dlm scoring:', scoring.kernel_name(), 'openmp', _rowscore.OPENMP)"
}
