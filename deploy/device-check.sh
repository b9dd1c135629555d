#!/usr/bin/env bash
# Runs ttftlab on a GPU host: the simulated engine with real NVML sampling,
# then the real-GPU torch engine, then the sampler's cost against the real
# driver. Expects bin/ttftlab and bin/gpunode.test built beforehand
# (`go build -o bin/ttftlab ./cmd/ttftlab && go test -c -o bin/gpunode.test ./gpunode`).
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
./bin/ttftlab up --out "$res" --run-id torch-h200 --quiet --warm-runs 5 --max-tokens 64 \
  --gpunode-config deploy/torch-engine/profiles.yaml --profile torch >> "$out/run.log" 2>&1; echo "torch rc=$?" >> "$out/run.log"
(cd gpunode && ../bin/gpunode.test -test.run '^$' -test.bench 'SampleOnce' -test.benchtime 2s) > "$out/bench.txt" 2>&1
for r in sim-h200 torch-h200; do
  cp "$res/$r/first_token_latency.md" "$out/$r.md" 2>/dev/null
  cp "$res/$r/results.json" "$out/$r.json" 2>/dev/null
done
tail -n 60 "$res"/engine-logs/* > "$out/engine-logs.txt" 2>/dev/null
ls -la "$out"
