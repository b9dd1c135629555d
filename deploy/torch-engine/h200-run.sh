#!/usr/bin/env bash
# Runs the PyTorch reference engine through ttftlab on a GPU host, from a
# directory that holds bin/ttftlab (`make device-build`) and
# deploy/torch-engine/. Writes everything under $OUT (default
# /tmp/ttftlab-device); the run directories are tarred into results.tgz.
#   quick: engine tests, weights, one warm-restart start and a short sweep.
#   full:  warm-restart and cold-disk baselines, 3 restarts each; a
#          concurrency sweep 1,4,16,64 at 256 prompt tokens; one level at
#          1,024 prompt tokens.
set -uo pipefail
mode=${1:-full}
out=${OUT:-/tmp/ttftlab-device}
mkdir -p "$out"
res=/var/tmp/ttftlab-results
model=/var/tmp/ttftlab-torch-engine/Qwen2.5-1.5B-Instruct
common=(--out "$res" --quiet --gpunode-config deploy/torch-engine/profiles.yaml --profile torch
  --model "$model" --served-model-name Qwen/Qwen2.5-1.5B-Instruct --max-tokens 64)
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
  python3 -c "import sys, torch, transformers, safetensors; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'safetensors', safetensors.__version__, torch.cuda.get_device_name())"
  uname -a
  grep PRETTY /etc/os-release
  nproc; free -g; id -u
  df -hT /var/tmp /tmp
} > "$out/host.txt" 2>&1
PYTHONUNBUFFERED=1 timeout 300 python3 -m unittest discover -s deploy/torch-engine -v > "$out/unittest.txt" 2>&1
rc=$?
echo "unittest rc=$rc" >> "$out/unittest.txt"
if [ $rc -ne 0 ]; then
  # Keep the measurement run useful: serve without CUDA graphs.
  export TORCH_ENGINE_WARMUP=eager
  echo "tests failed: serving with TORCH_ENGINE_WARMUP=eager" >> "$out/unittest.txt"
fi
t0=$(date +%s.%N)
python3 deploy/torch-engine/serve_torch_openai.py --model "$model" --write-weights-only > "$out/weights.txt" 2>&1
echo "write-weights rc=$? in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s" >> "$out/weights.txt"
ls -la "$model" >> "$out/weights.txt"
if [ "$mode" = quick ]; then
  ./bin/ttftlab up "${common[@]}" --run-id quick --warm-runs 3 \
    --levels 1,16 --level-duration 6s --warmup 2s --input-len 256 --output-len 64 > "$out/run.log" 2>&1
  echo "quick rc=$?" >> "$out/run.log"
else
  ./bin/ttftlab up "${common[@]}" --run-id torch-warm --cold-mode warm-restart --repeats 3 --warm-runs 10 \
    --levels 1,4,16,64 --level-duration 12s --warmup 3s --input-len 256 --output-len 128 > "$out/run.log" 2>&1
  echo "torch-warm rc=$?" >> "$out/run.log"
  ./bin/ttftlab up "${common[@]}" --run-id torch-cold-disk --cold-mode cold-disk --repeats 3 --warm-runs 10 \
    --levels 1 --level-duration 10s --warmup 3s --input-len 1024 --output-len 64 >> "$out/run.log" 2>&1
  echo "torch-cold-disk rc=$?" >> "$out/run.log"
fi
tar czf "$out/results.tgz" -C "$(dirname "$res")" "$(basename "$res")"
ls -la "$out"
