#!/usr/bin/env bash
# The GPU check of issue 6, for a session with a lent GPU: one call, at most 8 minutes, and
# nothing from the network (at most an editable install of this checkout, without deps).
#
#   bash benchmarks/gpu_check.sh            # then read BENCHMARKS.md (or $OUT/BENCHMARKS.md)
#
# Needs torch with CUDA and the package's dependencies installed. Extra arguments go to
# benchmarks/gpu_check.py (e.g. --batch-sizes 64 128 --steps 15). CMPT_PEAK_TFLOPS overrides the
# card's bf16 peak used for the FLOP utilisation.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import cmpt_lightning" 2>/dev/null; then
    "$PYTHON" -m pip install --no-deps --no-build-isolation -q -e . || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
# 7.5 minutes for the Python part: it skips its optional parts past half of --budget seconds
timeout --signal=INT --kill-after=15 450 "$PYTHON" benchmarks/gpu_check.py --budget 400 "$@"
status=$?
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
    cp BENCHMARKS.md "${OUT}/BENCHMARKS.md" 2>/dev/null || true
fi
exit "$status"
