#!/usr/bin/env bash
# Device-machine helper for bench/train_step.py, bench/lora_overhead.py and bench/megatron_parity.py: brings Transformer Engine,
# Megatron-core and Liger onto a GPU machine without internet, from what ../shared/gpu/prepare-te.sh put
# under .te/ and .whl/ (and the liger-kernel wheel, also in .whl/: see bench/README.md).
#
# A device call may carry at most 64 MiB, so the TE wheel travels as 56 MiB parts, one per call,
# in back-to-back calls (a warm machine keeps /tmp for 30 s between calls):
#   bash bench/gpu_setup.sh check            # (optional, first call) versions, GPU, nvcc
#   bash bench/gpu_setup.sh stash p00        # carry [".te/p00"]: copies it to /tmp/te/
#   ... p01, p02, p03 likewise ...
#   bash bench/gpu_setup.sh install          # carry [".te/p04", ".te/src", ".whl"]: stashes p04,
#                                            # joins, installs TE, builds transformer_engine_torch,
#                                            # installs .whl/* (megatron-core, pydantic, liger-kernel)
#                                            # into /tmp/site
#   bash bench/gpu_setup.sh bench [ARGS...]  # PYTHONPATH=/tmp/site python3 bench/train_step.py ARGS
#                                            # (every option passes through: --all, --size hidden4096, ...),
#                                            # JSON record to $OUT/<date>-<gpu>.json
#   bash bench/gpu_setup.sh bench-tp K [ARGS...] # the same under torchrun on K GPUs, --tensor-parallel K
#                                            # (a K-GPU kind, e.g. nvidia-h100-x2 for K = 2)
#   bash bench/gpu_setup.sh parity [ARGS...] # PYTHONPATH=/tmp/site python3 bench/megatron_parity.py ARGS,
#                                            # JSON record to $OUT/megatron-parity.json
#   bash bench/gpu_setup.sh wheels           # carry [".whl"]: only .whl/* into /tmp/site (no TE; enough
#                                            # for bench/lora_overhead.py: peft and accelerate wheels)
#   bash bench/gpu_setup.sh peft [ARGS...]   # PYTHONPATH=/tmp/site python3 bench/lora_overhead.py ARGS,
#                                            # JSON record to $OUT/<date>-peft-<gpu>.json
#   bash bench/gpu_setup.sh te-parity        # bench/te_parity.py: te vs torch backend logits and loss curves
#   bash bench/gpu_setup.sh gpu-tests        # pytest tests/backends and the NCCL tensor-parallel test
#   bash bench/gpu_setup.sh main-job         # megaspec train -c bench/configs/main_job_reference.yaml --device cuda
# `install` and `bench` may share one call: `bash bench/gpu_setup.sh install; bash bench/gpu_setup.sh bench --profile`
# (likewise `install` and `parity`).
# Logs go to $OUT (or /tmp/out when OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/te
PARTS=5
WHEEL=transformer_engine_cu13-2.20.2-py3-none-manylinux_2_28_x86_64.whl
WHEEL_SHA256=30063d3699e779cce63617c3458804f7a504ce8279f2749c98313db9daae273e

stash() {
  local part=$1
  [ -f ".te/$part" ] || { echo "stash: .te/$part was not carried"; return 1; }
  cp ".te/$part" /tmp/te/ && echo "stashed $part" && ls -l /tmp/te
}

te_importable() {
  PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} python3 -c \
    'import transformer_engine.pytorch as te, transformer_engine as t; print("transformer_engine", t.__version__)' 2>&1
}

peft_importable() {
  PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} python3 -c \
    'import peft, accelerate, psutil; print("peft", peft.__version__, "accelerate", accelerate.__version__)' 2>&1
}

liger_importable() {
  PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} python3 -c \
    'import liger_kernel.transformers; from importlib.metadata import version; print("liger-kernel", version("liger-kernel"))' 2>&1
}

install() {
  local log=$OUT/setup.log
  {
    if [ -f .te/p04 ]; then stash p04; fi
    if te_importable | grep -q '^transformer_engine '; then
      echo "TE already importable: $(te_importable | tail -n 1)"
    else
      local have
      have=$(ls /tmp/te/p0? 2>/dev/null | wc -l)
      [ "$have" -eq "$PARTS" ] || { echo "install: $have of $PARTS parts in /tmp/te (machine went cold?)"; ls -l /tmp/te; return 1; }
      cat /tmp/te/p0? > "/tmp/te/$WHEEL"
      echo "$WHEEL_SHA256  /tmp/te/$WHEEL" | sha256sum -c - || return 1
      python3 -m pip install -q --no-index --no-deps --no-cache-dir "/tmp/te/$WHEEL" .te/src/transformer_engine-2.20.2-py3-none-any.whl || return 1
      # Build a copy: TE's setup.py deletes common_headers/ and build_tools/ from its source tree.
      rm -rf /tmp/te_torch && cp -r .te/src/te_torch /tmp/te_torch
      # cudnn.h, nccl.h, cublas*.h live in the nvidia-* wheels, not in the CUDA toolkit's include/.
      local extra
      extra=$(python3 - <<'EOF'
import glob, site, os
dirs = []
for root in site.getsitepackages():
    dirs += glob.glob(os.path.join(root, "nvidia", "*", "include"))
    dirs += glob.glob(os.path.join(root, "nvidia", "*", "*", "include"))
print(":".join(sorted(set(dirs))))
EOF
)
      echo "CPATH additions: $extra"
      local started=$SECONDS
      (cd /tmp/te_torch && CPATH="${CPATH:+$CPATH:}$extra" NVTE_FRAMEWORK=pytorch MAX_JOBS=16 NVTE_CUDA_ARCHS=90 \
        NVTE_PYTORCH_FORCE_BUILD=TRUE python3 -m pip install --no-index --no-deps --no-build-isolation -v . \
        > "$OUT/te_build.log" 2>&1) || { echo "transformer_engine_torch build FAILED, tail of te_build.log:"; tail -n 40 "$OUT/te_build.log"; }
      echo "transformer_engine_torch build took $((SECONDS - started)) s"
    fi
    install_wheels
    echo "import check: $(te_importable | tail -n 3)"
  } 2>&1 | tee -a "$log"
}

# Every .whl/*.whl (megatron-core, pydantic, liger-kernel, peft, accelerate) into /tmp/site, without
# dependencies: liger-kernel's (torch, triton, transformers) and peft's and accelerate's (torch,
# transformers, numpy, packaging, psutil, pyyaml, tqdm, safetensors, huggingface_hub) are on the image;
# the import checks say if one is not.
install_wheels() {
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/ (was it carried?)"; return 1; }
  ls .whl/liger_kernel-*.whl >/dev/null 2>&1 || echo "no liger-kernel wheel in .whl/: the HF + Liger peer will not run"
  ls .whl/peft-*.whl .whl/accelerate-*.whl >/dev/null 2>&1 \
    || echo "no peft or accelerate wheel in .whl/: bench/lora_overhead.py's HF + PEFT will not run"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "installing .whl/* FAILED"
  echo "import check: $(liger_importable | tail -n 3)"
  echo "import check: $(peft_importable | tail -n 3)"
}

# TE loads cuDNN by itself; without these it picked the system's /lib/x86_64-linux-gnu/libcudnn_cnn.so.9,
# which clashes with the pip cuDNN torch had already loaded ("undefined symbol: ...OperationSet").
site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
if [ -d "$site/nvidia/cudnn/lib" ]; then
  export CUDNN_HOME=$site/nvidia/cudnn CUDNN_PATH=$site/nvidia/cudnn
  export LD_LIBRARY_PATH=$site/nvidia/cudnn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

case "${1:-}" in
  check)
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
    python3 -c 'import torch, transformers, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, transformers.__version__)'
    python3 -c 'import triton; print("triton", triton.__version__)'
    which nvcc && nvcc --version | tail -n 2
    python3 -m pip list 2>/dev/null | grep -iE 'cudnn|nccl|cublas|cuda-toolkit|einops|onnx|wheel|setuptools|pybind' ;;
  stash) stash "$2" ;;
  install) install ;;
  wheels) install_wheels 2>&1 | tee -a "$OUT/setup.log" ;;
  bench)
    shift
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    python3 bench/train_step.py --json "$OUT" --profile-dir "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" ;;
  bench-tp)
    # bench-tp K [ARGS...]: K processes (GPUs), each a tensor-parallel rank of every framework
    # with a tensor-parallel build (megaspec, its TE peers, Megatron-core).
    shift
    k=${1:?bench-tp needs the tensor-parallel size, e.g. bench-tp 2}
    shift
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    python3 -m torch.distributed.run --standalone --nproc-per-node "$k" bench/train_step.py \
      --tensor-parallel "$k" --json "$OUT" --profile-dir "$OUT" "$@" 2>&1 | tee "$OUT/bench-tp.log" ;;
  peft)
    shift
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    python3 bench/lora_overhead.py --json "$OUT" "$@" 2>&1 | tee "$OUT/peft.log" ;;
  parity)
    shift
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    python3 bench/megatron_parity.py --json "$OUT/megatron-parity.json" "$@" 2>&1 | tee "$OUT/parity.log" ;;
  te-parity)
    shift
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    python3 -m bench.te_parity --json "$OUT/te-parity.json" "$@" 2>&1 | tee "$OUT/te-parity.log" ;;
  gpu-tests)
    # The tests that skip on a CPU: the te backend, and NCCL tensor parallelism (two GPUs).
    shift
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    python3 -m pytest -ra -q -p no:cacheprovider tests/backends tests/models/test_tensor_parallel.py "$@" 2>&1 \
      | tee "$OUT/gpu-tests.log" ;;
  main-job)
    # The main job at the reference size (bench/configs/main_job_reference.yaml), its metrics to $OUT.
    shift
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    python3 -m megaspec train -c bench/configs/main_job_reference.yaml --device cuda \
      --output-dir /tmp/reference --overwrite "$@" 2>&1 | tee "$OUT/main-job.log"
    cp /tmp/reference/metrics.jsonl "$OUT/main-job-metrics.jsonl" ;;
  *) echo "usage: $0 check|stash pNN|install|wheels|bench [ARGS...]|peft [ARGS...]|parity [ARGS...]|te-parity|gpu-tests|main-job"
     exit 2 ;;
esac
