#!/usr/bin/env bash
# The GPU check of issue 21 for a session with a lent GPU: one call, nothing from the network.
#
#   bash scripts/fetch_gpu_wheels.sh          # here, once: the wheels the device lacks -> .whl/
#   device run: carry [".whl"], timeout_s 420, command "bash benchmarks/gpu_check.sh"
#   CUDA_VISIBLE_DEVICES= bash benchmarks/gpu_check.sh --cpu   # dry run here, tiny, on the CPU
#
# 1. installs the carried wheels (.whl/*.whl: open_clip_torch, loralib, ftfy, wcwidth, litdata
#    and their missing dependencies) into /tmp/site, as the device README says, and puts this
#    checkout's src/ on PYTHONPATH (the tree travels with every call: no wheel of our own);
# 2. the core check, benchmarks/gpu_check.py, under a hard budget (CMPT_GPU_BUDGET seconds,
#    270 by default; it stops adding configurations before then and still writes its table),
#    with a SIGINT 45 s after the budget as a backstop: at most 5 minutes;
# 3. optional, only with CMPT_GPU_CHECK=all and while time is left: the cache section
#    (benchmarks/cache_train.py, Trainer.fit from a litdata cache, about 2.5 minutes).
#
# Output: the markdown table on stdout (the reply's output_tail) and in $OUT/gpu_check.md,
# the profiler tables in $OUT/gpu_kernels.md, the whole log in $OUT/gpu_check.log.
# Extra arguments go to gpu_check.py (--cpu, --batch-sizes, --steps, --precisions, --modes).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python3}"
SITE="${CMPT_SITE:-/tmp/site}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl && export PYTHONPATH="$SITE:$PWD/src" || exit 1
else
    echo "no .whl/*.whl (run scripts/fetch_gpu_wheels.sh here and carry .whl): using what is installed"
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
LOG=/dev/null
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then LOG="$OUT/gpu_check.log"; fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
        --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" -c "import torch, open_clip, loralib; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, torch.cuda.is_available(), '| open_clip', open_clip.__version__)"
} 2>&1 | tee -a "$LOG"
BUDGET="${CMPT_GPU_BUDGET:-270}"
started=$SECONDS
timeout --signal=INT --kill-after=15 $((BUDGET + 45)) \
    "$PYTHON" benchmarks/gpu_check.py --budget "$BUDGET" "$@" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
if [ "${CMPT_GPU_CHECK:-core}" = "all" ] && [ $((SECONDS - started)) -lt 330 ]; then
    if "$PYTHON" -c "import litdata" 2>/dev/null; then
        timeout --signal=INT --kill-after=15 150 "$PYTHON" benchmarks/cache_train.py \
            --device cuda --no-write 2>&1 | tee -a "$LOG"
    else
        echo "cache section skipped: litdata is not importable" | tee -a "$LOG"
    fi
fi
echo "gpu_check.sh: exit $status after $((SECONDS - started)) s" | tee -a "$LOG"
exit "$status"
