#!/usr/bin/env bash
# The GPU checks of issues 6 and 12, for a session with a lent GPU: one call, at most 9.5
# minutes, and nothing from the network (at most an editable install of this checkout, no deps).
#
#   bash benchmarks/gpu_check.sh            # then read BENCHMARKS.md (or $OUT/BENCHMARKS.md)
#   CMPT_GPU_CHECK=cache bash benchmarks/gpu_check.sh   # only the cache section (about 2.5 min)
#   CMPT_GPU_CHECK=core bash benchmarks/gpu_check.sh    # only gpu_check.py (at most 6.5 min)
#
# Needs torch with CUDA and the package's dependencies installed (litdata, the cache extra, for
# the cache section). Extra arguments go to benchmarks/gpu_check.py (e.g. --batch-sizes 64 128
# --steps 15). CMPT_PEAK_TFLOPS overrides the card's bf16 peak used for the FLOP utilisation.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import cmpt_lightning" 2>/dev/null; then
    "$PYTHON" -m pip install --no-deps --no-build-isolation -q -e . || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
PARTS="${CMPT_GPU_CHECK:-all}"
status=0
if [ "$PARTS" != "cache" ]; then
    # 6.5 minutes for gpu_check.py: it skips its optional parts past half of --budget seconds
    timeout --signal=INT --kill-after=15 380 "$PYTHON" benchmarks/gpu_check.py --budget 330 "$@"
    status=$?
fi
if [ "$PARTS" != "core" ]; then
    # 5c (issue 12): Trainer.fit from a litdata cache vs from JPEG files, bf16, batch 128,
    # every usable core but one as DataLoader workers (at most 8), beside the model alone
    if "$PYTHON" -c "import litdata" 2>/dev/null; then
        timeout --signal=INT --kill-after=15 150 "$PYTHON" benchmarks/cache_train.py --device cuda
        cache_status=$?
        [ "$status" -eq 0 ] && status=$cache_status
    else
        echo "cache section skipped: litdata is not installed (pip install -e '.[cache]')"
    fi
fi
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
    cp BENCHMARKS.md "${OUT}/BENCHMARKS.md" 2>/dev/null || true
fi
exit "$status"
