#!/usr/bin/env bash
# The checks that need a CUDA GPU, in under 10 minutes: the official-code comparison (OGM-GE, generated
# CREMA-D-layout data) with bench in fp32 and in bf16, the loop-overhead benchmark, a tiny grid run on the GPU
# in fp32 and bf16 whose records must re-run identically, and the tests that touch the device.
#   bash benchmarks/gpu_check.sh                       # bench's side of the OGM-GE comparison only
#   OGM_GE_OFFICIAL=DIR OGM_GE_SITE=SITE bash benchmarks/gpu_check.sh   # with the official code (see
#                                                      # benchmarks/ogm_ge_official.py for DIR and SITE)
# Without a GPU it says so in one line and exits 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run it on a machine with one" >&2
    exit 2
fi
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"

OFFICIAL=()
if [ -n "${OGM_GE_OFFICIAL:-}" ]; then
    OFFICIAL=(--official "$OGM_GE_OFFICIAL" --official-site "${OGM_GE_SITE:-}" --official-workers 4)
fi
step() {  # step SECONDS DESCRIPTION COMMAND...: one bounded step, its wall time printed
    local limit=$1 what=$2 started=$SECONDS
    shift 2
    echo "== $what"
    timeout "$limit" "$@"
    echo "   ($what: $((SECONDS - started)) s)"
}

step 150 "OGM-GE epoch, bench fp32 vs official (128 clips)" \
    "$PY" benchmarks/ogm_ge_official.py --device cuda --precision fp32 --train-clips 128 --threads 1 "${OFFICIAL[@]}"
step 120 "OGM-GE epoch, bench bf16 vs official fp32 (128 clips)" \
    "$PY" benchmarks/ogm_ge_official.py --device cuda --precision bf16 --train-clips 128 --threads 1 "${OFFICIAL[@]}"
step 60 "loop overhead on the GPU" "$PY" benchmarks/loop_overhead.py --device cuda --epochs 20

RESULTS=$(mktemp -d)
trap 'rm -rf "$RESULTS"' EXIT
for precision in fp32 bf16; do
    step 90 "tiny grid on the GPU, $precision, then verify" bash -c "
        '$PY' -m bench run --methods late_fusion,ogm_ge --datasets synthetic_2m --seeds 0 --missing-rates 0,0.5 \
            --epochs 2 --device cuda --precision $precision --results '$RESULTS/$precision' >/dev/null &&
        '$PY' -m bench verify --results '$RESULTS/$precision' --sample 2 --seed 0"
done
step 150 "tests that touch the device" "$PY" -m pytest -q -x tests/test_loop.py tests/test_data_path.py \
    tests/test_reliability.py tests/test_cpu_kernels.py -k "device or cuda or bf16 or precision or streamed or resident"
echo "gpu_check: all steps passed"
