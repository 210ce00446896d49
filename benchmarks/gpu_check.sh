#!/usr/bin/env bash
# The zoo's GPU check: one call of the device tool (one H200, under 9 minutes), results as JSON in $OUT.
#
#   bash benchmarks/gpu_check.sh prepare         # here, once: wheels, data and the reference into .gpu-check/ (~40 MB)
#   device run: command "bash benchmarks/gpu_check.sh", carry [".gpu-check"], timeout_s 540
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh # here, on the CPU: every step that can run without a GPU, tiny presets
#
# Steps, in this order, each under its own time limit and all under one deadline (GPU_CHECK_BUDGET seconds, default
# 500; a step that would not fit is skipped and says so), each recorded in $OUT/gpu_check.json as soon as it ends:
#   env          nvidia-smi, torch and CUDA versions, ONNX Runtime's providers
#   pytest_gpu   pytest -m gpu (CUDA training, bf16 and channels_last, torch.compile, ONNX Runtime CUDA parity)
#   MODEL        for transformer, vit, resnet18: `zoo train MODEL --device cuda` (the book preset: the book's epochs),
#                its validation metrics and training speed from the run's manifest; `zoo export MODEL --onnx`, whose
#                parity covers ONNX Runtime's CUDA provider when onnxruntime-gpu is installed (skipped with the reason
#                otherwise); the book's own code (d2l 1.0.3, tools/d2l_reference.py) on the same GPU: the Transformer
#                for the book's 30 epochs, ViT and ResNet-18 for REF_EPOCHS (default 2) of the book's 10, which is
#                enough for its examples/s and keeps the call under 9 minutes (its accuracy is then a 2-epoch one)
# Outputs ($OUT, at most 8 files come back): gpu_check.json, gpu_check.log (everything printed), pytest_gpu.log.
#
# On the device machine: python3 is its own (torch 2.11, onnxruntime 1.30 CPU-only, no network); the zoo's wheels,
# d2l 1.0.3 and IPython (d2l imports it) are installed from .gpu-check/whl into /tmp/site. onnxruntime-gpu (for CUDA
# parity) is several times the 64 MiB a call may carry: put its wheel in .gpu-check/ort/ if it is there by other means
# (an earlier call's parts, say); without it CUDA parity is recorded as skipped, never as passed.
# GPU_CHECK_DRY=1 (here): the project's .venv, --device cpu, the tiny presets, one thread; the reference runs the
# Transformer for 1 epoch and ViT for 1 batch (ResNet-18's reference is skipped: its validation pass over 10,000
# images at 96 px takes minutes on this CPU); pytest -m gpu collects and skips. OUT defaults to /tmp/gpu_check_dry.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CARRY=$ROOT/.gpu-check

prepare() {
  set -e
  local shared=${SHARED:-$ROOT/../shared}
  grep -qx '/.gpu-check/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu-check/' >> .git/info/exclude; }
  rm -rf "$CARRY"; mkdir -p "$CARRY/whl" "$CARRY/data/FashionMNIST/raw" "$CARRY/data/fra-eng"
  .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$CARRY/whl" . plugins/zoo-*
  # d2l 1.0.3 imports IPython and matplotlib_inline at import time; the device image has neither (pure-Python wheels)
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$CARRY/whl" \
    d2l==1.0.3 ipython==9.18.1 ipython-pygments-lexers==1.1.1 matplotlib-inline==0.2.2 traitlets==5.16.1 \
    jedi==0.20.1 parso==0.8.7 pexpect==4.9.0 ptyprocess==0.7.0 prompt-toolkit==3.0.53 wcwidth==0.9.4 \
    stack-data==0.6.3 executing==2.3.0 asttokens==3.0.2 pure-eval==0.2.4
  for f in "$shared"/data/FashionMNIST/raw/*-ubyte; do gzip -c "$f" > "$CARRY/data/FashionMNIST/raw/$(basename "$f").gz"; done
  gzip -c "$shared/data/fra-eng/fra.txt" > "$CARRY/data/fra-eng/fra.txt.gz"
  cp "$shared/tools/d2l_reference.py" "$CARRY/"
  du -sh "$CARRY"; echo "device run: command 'bash benchmarks/gpu_check.sh', carry ['.gpu-check'], timeout_s 540"
}
if [ "${1:-}" = prepare ]; then prepare; exit; fi

DRY=${GPU_CHECK_DRY:-0}
START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_BUDGET:-500}))
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
if [ "$DRY" = 1 ]; then
  OUT=${OUT:-/tmp/gpu_check_dry}; mkdir -p "$OUT"
  PY=$ROOT/.venv/bin/python; DEVICE=cpu; PRESET=tiny; THREADS=(--threads 1); export OMP_NUM_THREADS=1
  export ZOO_DATA=${ZOO_DATA:-$ROOT/../shared/data}
  REF_PY=${D2L_VENV:-/tmp/d2l-ref-venv}/bin/python; REF_SCRIPT=$ROOT/../shared/tools/d2l_reference.py
else
  : "${OUT:?OUT is unset: run this through the device tool (or GPU_CHECK_DRY=1 here)}"
  PY=python3; DEVICE=cuda; PRESET=book; THREADS=()
  REF_PY=python3; REF_SCRIPT=$CARRY/d2l_reference.py
fi
REF_EPOCHS=${REF_EPOCHS:-2}
JSON=$OUT/gpu_check.json
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

# record NAME FILE: put FILE's JSON (or, if it is not JSON, its last 2000 characters as text) under steps.NAME
record() {
  "$PY" - "$JSON" "$1" "$2" "$DRY" "$START" <<'PY'
import json, sys, time
path, name, file, dry, start = sys.argv[1:]
try:
    data = json.load(open(path))
except (OSError, ValueError):
    data = {"script": "benchmarks/gpu_check.sh", "dry_run": dry == "1",
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(start))), "steps": {}}
text = open(file).read() if file != "-" else ""
try:
    value = json.loads(text)
except ValueError:
    value = {"error": text[-2000:]}
value["seconds_since_start"] = round(time.time() - int(start))
data["steps"][name] = value
json.dump(data, open(path + ".tmp", "w"), indent=1)
__import__("os").replace(path + ".tmp", path)
PY
}

# fits NAME SECONDS: whether a step needing SECONDS fits before the deadline; records a skip if not
fits() {
  local left=$((DEADLINE - $(date +%s)))
  if [ "$left" -lt "$2" ]; then
    printf '{"skipped": "needs about %ss, %ss left of GPU_CHECK_BUDGET"}' "$2" "$left" > "$WORK/skip.json"
    record "$1" "$WORK/skip.json"; return 1
  fi
}
limit() { local left=$((DEADLINE - $(date +%s))); echo $(( $1 < left ? $1 : left )); }

echo "== setup ($([ "$DRY" = 1 ] && echo dry run on the CPU || echo device run)) $(date -u +%FT%TZ)"
if [ "$DRY" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$CARRY"/whl/*.whl $(ls "$CARRY"/ort/*.whl 2>/dev/null) || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
  export ZOO_DATA=/tmp/zoo-data
  mkdir -p "$ZOO_DATA/FashionMNIST/raw" "$ZOO_DATA/fra-eng"
  for f in "$CARRY"/data/FashionMNIST/raw/*.gz; do gunzip -c "$f" > "$ZOO_DATA/FashionMNIST/raw/$(basename "$f" .gz)"; done
  gunzip -c "$CARRY/data/fra-eng/fra.txt.gz" > "$ZOO_DATA/fra-eng/fra.txt"
fi

"$PY" - > "$WORK/env.json" <<'PY'
import json, os, subprocess
import torch
info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "cpus": os.cpu_count()}
try:
    import onnxruntime
    info.update(onnxruntime=onnxruntime.__version__, ort_providers=onnxruntime.get_available_providers())
except ImportError as e:
    info["onnxruntime"] = f"missing: {e}"
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
except OSError:
    info["nvidia_smi"] = None
import zoo_core
info["zoo_core"] = zoo_core.__version__
print(json.dumps(info))
PY
record env "$WORK/env.json"; cat "$WORK/env.json"; echo

echo "== pytest -m gpu $(date -u +%T)"
if fits pytest_gpu 60; then
  timeout "$(limit 150)" "$PY" -m pytest -m gpu -n 0 -q -p no:cacheprovider -o addopts="--import-mode=importlib -ra" \
    > "$OUT/pytest_gpu.log" 2>&1
  rc=$?
  "$PY" - "$rc" "$OUT/pytest_gpu.log" > "$WORK/pytest.json" <<'PY'
import json, sys
rc, log = int(sys.argv[1]), open(sys.argv[2]).read().splitlines()
summary = next((l for l in reversed(log) if " passed" in l or " skipped" in l or " failed" in l or "error" in l), "")
print(json.dumps({"exit_code": rc, "timed_out": rc == 124, "summary": summary.strip("= "),
                  "skips_and_failures": [l for l in log if l.startswith(("SKIPPED", "FAILED", "ERROR"))][:40]}))
PY
  record pytest_gpu "$WORK/pytest.json"; cat "$WORK/pytest.json"; echo
fi

# model NAME ZOO_SECONDS REF_SECONDS REF_ARGS...: train, export, reference; one JSON record
model() {
  local name=$1 zoo_s=$2 ref_s=$3; shift 3
  echo "== $name $(date -u +%T)"
  fits "$name" 30 || return
  local zoo_log=$WORK/$name.zoo.log ref_out=$WORK/$name.ref.out export_log=$WORK/$name.export.log run=""
  timeout "$(limit "$zoo_s")" "$PY" -m zoo_core train "$name" --preset "$PRESET" --device "$DEVICE" "${THREADS[@]}" \
    --seed 0 --out "$WORK/artifacts" > "$WORK/$name.zoo.out" 2> "$zoo_log"
  local zoo_rc=$?
  [ $zoo_rc = 0 ] && run=$(tail -n 1 "$WORK/$name.zoo.out")
  local export_rc=skipped
  if [ -n "$run" ] && [ $((DEADLINE - $(date +%s))) -gt 20 ]; then
    timeout "$(limit 120)" "$PY" -m zoo_core export "$name" --run "$run" --out "$WORK/artifacts" --onnx \
      > "$export_log" 2>&1
    export_rc=$?
  fi
  local ref_rc=skipped
  if [ "$#" -gt 0 ] && [ $((DEADLINE - $(date +%s))) -gt 30 ]; then
    timeout "$(limit "$ref_s")" "$REF_PY" "$REF_SCRIPT" "$name" --data "$ZOO_DATA" --device "$DEVICE" --seed 0 "$@" \
      > "$ref_out" 2> "$WORK/$name.ref.err"
    ref_rc=$?
  fi
  "$PY" - "$name" "$zoo_rc" "$zoo_log" "$run" "$export_rc" "$export_log" "$ref_rc" "$ref_out" "$WORK/$name.ref.err" \
    "$*" "$PRESET" "$DEVICE" > "$WORK/$name.json" <<'PY'
import json, os, sys
from pathlib import Path
name, zoo_rc, zoo_log, run, export_rc, export_log, ref_rc, ref_out, ref_err, ref_args, preset, device = sys.argv[1:]
tail = lambda p: Path(p).read_text()[-1500:] if Path(p).is_file() else ""
result = {"zoo_command": f"zoo train {name} --preset {preset} --device {device} --seed 0"}
if zoo_rc == "0" and run:
    m = json.loads((Path(run) / "manifest.json").read_text())
    result["zoo"] = {"train": m["train"], "metrics": m["metrics"], "epochs": m["train"].get("epochs"),
                     "run": Path(run).name}
    if export_rc == "0":
        m = json.loads((Path(run) / "manifest.json").read_text())
        result["zoo"]["onnx_parity"] = {g: v.get("parity") for g, v in m.get("onnx", {}).get("graphs", {}).items()}
    else:
        result["zoo"]["export"] = {"exit_code": export_rc, "log": tail(export_log)}
else:
    result["zoo"] = {"exit_code": zoo_rc, "timed_out": zoo_rc == "124", "log": tail(zoo_log)}
if ref_rc == "skipped":
    result["reference"] = "skipped: " + (os.environ.get("REF_SKIP", "not run in this mode") if not ref_args else
                                         "too little time left")
else:
    result["reference_command"] = f"d2l_reference.py {name} --device {device} --seed 0 {ref_args}"
    lines = Path(ref_out).read_text().strip().splitlines()
    try:
        result["reference"] = json.loads(lines[-1])
    except (IndexError, ValueError):
        result["reference"] = {"exit_code": ref_rc, "timed_out": ref_rc == "124", "log": tail(ref_err)}
z, r = result.get("zoo", {}).get("train", {}), result.get("reference")
if isinstance(r, dict) and preset == "book":  # a tiny preset's speed is no match for the book's network
    for ours, theirs in (("examples_per_s", "train_examples_per_s"), ("tokens_per_s", "train_tgt_tokens_per_s")):
        if z.get(ours) and r.get(theirs):
            result["speed_ratio"] = round(z[ours] / r[theirs], 2)
print(json.dumps(result))
PY
  record "$name" "$WORK/$name.json"; cat "$WORK/$name.json"; echo
}

if [ "$DRY" = 1 ]; then
  model vit 300 300 --max-batches 1
  model transformer 300 300 --epochs 1
  REF_SKIP="ResNet-18's reference validates 10,000 images at 96 px after training: minutes on this CPU" \
    model resnet18 300 0
else
  model vit 150 150 --epochs "$REF_EPOCHS"
  model transformer 90 90 --epochs 30
  model resnet18 150 150 --epochs "$REF_EPOCHS"
fi

echo "{\"seconds\": $(( $(date +%s) - START ))}" > "$WORK/end.json"; record total "$WORK/end.json"
echo "== done in $(( $(date +%s) - START ))s: $JSON"
