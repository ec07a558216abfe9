#!/usr/bin/env bash
# Download here, into .whl/ (ignored by git), exactly the wheels a lent GPU machine lacks to run
# benchmarks/gpu_check.sh and `cmpt` itself: nothing can be fetched there, and its image (the
# device tool's KINDS.md lists its packages) has torch, torchvision, lightning, timm, regex,
# safetensors, huggingface-hub, rich, pyyaml, numpy, ... but none of the names below.
#
#   bash scripts/fetch_gpu_wheels.sh      # then: run(carry=[".whl"], command="bash benchmarks/gpu_check.sh")
#
# Python 3.12 (the device's), x86-64 manylinux; --no-deps, so every missing dependency is named
# here, and the script then reads each wheel's Requires-Dist and fails if one is neither
# fetched nor on the device. Our own package is not a wheel: the working tree travels with
# every call and gpu_check.sh puts its src/ on PYTHONPATH (always the code of that call).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${WHEEL_DIR:-.whl}"

# name==version: the versions the test suite runs with here (pyproject's bounds in brackets)
WHEELS=(
    open_clip_torch==3.3.0     # [>=3.3,<3.4]: we call VisionTransformer internals
    ftfy==6.3.1                # open_clip's
    wcwidth==0.7.0             # ftfy's
    loralib==0.1.2             # [>=0.1.2]
    litdata==0.2.76            # [>=0.2.76,<0.3]: the cache (cache_train.py, data.cache)
    boto3==1.43.11             # litdata imports it at import time
    botocore==1.43.11          # boto3's
    s3transfer==0.17.0         # boto3's
    jmespath==1.1.0            # boto3's, botocore's
    obstore==0.12.1            # litdata's (a compiled wheel)
    jsonargparse==4.53.0       # [signatures>=4.27]: the cmpt command line (LightningCLI)
    docstring_parser==0.18.0   # jsonargparse[signatures]
    typeshed_client==2.15.0    # jsonargparse[signatures]
)

PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)
platform_flags=()
for p in "${PLATFORMS[@]}"; do platform_flags+=(--platform "$p"); done

mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/*.whl  # one version of each: two stop the whole install there
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platform_flags[@]}" -d "$OUT_DIR" "${WHEELS[@]}"

# every Requires-Dist of every wheel (extras and markers that do not hold on the device's
# Python 3.12 / Linux left out) must be fetched here or installed on the device
python3 - "$OUT_DIR" <<'PY'
import re
import sys
import zipfile
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

#: the device image's packages (KINDS.md, "Python packages already there", nvidia-h200)
DEVICE = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml
markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
#: the extras we use (jsonargparse[signatures])
EXTRAS = {"jsonargparse": {"signatures"}}
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
fetched = {norm(w.name.split("-")[0]): w for w in wheels}
missing = []
for name, wheel in fetched.items():
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(meta).decode().splitlines()
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None:
            extras = EXTRAS.get(name, set()) | {""}
            if not any(req.marker.evaluate({**ENV, "extra": e}) for e in extras):
                continue
        dep = norm(req.name)
        if dep not in fetched and dep not in DEVICE:
            missing.append(f"{name} needs {req} (neither fetched nor on the device)")
print(f"{len(wheels)} wheels in {sys.argv[1]}: " + ", ".join(w.name for w in wheels))
if missing:
    print("\n".join(missing))
    sys.exit(1)
print("every Requires-Dist is fetched or on the device")
PY
du -sh "$OUT_DIR"
