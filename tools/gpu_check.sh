#!/usr/bin/env bash
# The GPU check: everything this project wants to know from one CUDA GPU, in about 8 minutes.
#
#   OUT=gpu_out PACK=.carry/faces bash tools/gpu_check.sh
#
# Writes under $OUT: env.txt (GPU, driver, torch, bf16 support), cuda_tests.txt (the tests marked for CUDA),
# train_a.log / train_b.log and history_a.csv / history_b.csv (two short epochs of each model on $PACK:
# images/s and peak GPU memory per epoch), and benchmark_cuda.json (the app's latency with --device cuda).
#
# What travels: the checkout, plus $PACK (a pack under 60 MB: crops stored lossy, UTKFace alone then about 43 MB,
#   python -m training.prepare --data UTKFace.tar.gz --crop-quality 80 --out .carry/faces; lossless, as training
#   here stores them, it would be about 400 MB) and, where the machine's Python
# lacks them, wheels in .whl/ (safetensors, tqdm, facenet-pytorch, pytest; see the device tool's README),
# installed here with --no-deps so the machine's own torch stays.
# Not run yet: no GPU has been lent to this project. Every step is bounded and a failing step does not
# stop the next.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
PACK=${PACK:-.carry/faces}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi

{ nvidia-smi; $PY - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported(),
          f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF
} > "$OUT/env.txt" 2>&1

timeout 120 $PY -m pytest -q -rs tests/test_distributed.py -k gpu > "$OUT/cuda_tests.txt" 2>&1

for model in a b; do
  # Two short epochs: the first pays for cuDNN's autotuning and the data decoding, the second is the speed.
  timeout 150 $PY -m training.train --model "$model" --data "$PACK" --out "$OUT/run_$model" --device cuda \
      --epochs 2 --stage1-epochs 1 --batch-size 256 --patience 99 --max-minutes 2 > "$OUT/train_$model.log" 2>&1
  cp "$OUT/run_$model/history.csv" "$OUT/history_$model.csv" 2>/dev/null
done

timeout 120 $PY -m tools.benchmark --device cuda --runs 30 --out "$OUT/benchmark_cuda.json" > "$OUT/benchmark.txt" 2>&1
echo "done: $(ls "$OUT" | tr '\n' ' ')"
