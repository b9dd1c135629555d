#!/usr/bin/env bash
# Runs ttftlab on a GPU host: the simulated engine with real NVML sampling,
# then the real-GPU torch engine (baseline and a concurrency sweep), then the
# sampler's cost against the real driver. Expects bin/ttftlab and
# bin/gpunode.test built beforehand
# (`make device-build`, which also silences go-nvml's cgo deprecation warnings).
set -uo pipefail
out=${OUT:-/tmp/ttftlab-device}
mkdir -p "$out"
res=/tmp/ttftlab-results
{
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
  uname -a
} > "$out/host.txt" 2>&1
./bin/ttftlab up --out "$res" --run-id sim-h200 --quiet > "$out/run.log" 2>&1; echo "sim rc=$?" >> "$out/run.log"
# The torch engine (random weights, not vLLM) writes its weights into the
# model directory on first use and batches continuously, so a sweep shows
# the batching trade-off. deploy/torch-engine/h200-run.sh is the full
# cold-disk and sweep batch.
./bin/ttftlab up --out "$res" --run-id torch-h200 --quiet --warm-runs 5 --max-tokens 64 \
  --gpunode-config deploy/torch-engine/profiles.yaml --profile torch \
  --model /var/tmp/ttftlab-torch-engine/Qwen2.5-1.5B-Instruct --served-model-name Qwen/Qwen2.5-1.5B-Instruct \
  --levels 1,4,16 --level-duration 8s --warmup 2s --input-len 256 --output-len 32 >> "$out/run.log" 2>&1
echo "torch rc=$?" >> "$out/run.log"
(cd gpunode && ../bin/gpunode.test -test.run '^$' -test.bench 'SampleOnce' -test.benchtime 2s) > "$out/bench.txt" 2>&1
for r in sim-h200 sim-h200-sweep torch-h200 torch-h200-sweep; do
  for f in first_token_latency.md sweep.md; do
    [ -f "$res/$r/$f" ] && { echo; echo "<!-- $r/$f -->"; cat "$res/$r/$f"; } >> "$out/reports.md"
  done
done
for r in sim-h200 torch-h200 torch-h200-sweep; do cp "$res/$r/results.json" "$out/$r.json" 2>/dev/null; done
tail -n 40 "$res"/engine-logs/* > "$out/engine-logs.txt" 2>/dev/null
ls -la "$out"
