#!/usr/bin/env bash
# serve_slm_vllm.sh — serve a small language model with vLLM's OpenAI API.
#
# Every setting comes from the environment, so a gpunode `command` profile
# (see gpunode/testdata/profiles.example.yaml) can hand it typed knobs:
#
#   MODEL                   model name or path    (Qwen/Qwen2.5-1.5B-Instruct)
#   HOST                    listen address         (127.0.0.1)
#   PORT                    listen port            (8000)
#   SERVED_MODEL_NAME       name in /v1/models     (the model)
#   MAX_MODEL_LEN           --max-model-len        (vLLM's default)
#   GPU_MEMORY_UTILIZATION  --gpu-memory-utilization (vLLM's default, 0.9)
#   MAX_NUM_SEQS            --max-num-seqs         (vLLM's default)
#   ENFORCE_EAGER           1 adds --enforce-eager (0)
#   EXTRA_ARGS              more vllm serve flags, split on whitespace
#
# It ends in `exec`, so vLLM replaces this shell: SIGTERM and SIGINT reach
# vLLM itself, and the pid a supervisor holds is vLLM's.
set -euo pipefail

MODEL="${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
SERVED_MODEL_NAME="${SERVED_MODEL_NAME:-$MODEL}"
MAX_MODEL_LEN="${MAX_MODEL_LEN:-}"
GPU_MEMORY_UTILIZATION="${GPU_MEMORY_UTILIZATION:-}"
MAX_NUM_SEQS="${MAX_NUM_SEQS:-}"
ENFORCE_EAGER="${ENFORCE_EAGER:-0}"
EXTRA_ARGS="${EXTRA_ARGS:-}"

die() { echo "serve_slm_vllm.sh: $*" >&2; exit 2; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

is_uint "$PORT" && (( PORT >= 1 && PORT <= 65535 )) || die "PORT=$PORT: want 1..65535"
[[ -z "$MAX_MODEL_LEN" ]] || is_uint "$MAX_MODEL_LEN" || die "MAX_MODEL_LEN=$MAX_MODEL_LEN: want a whole number"
[[ -z "$MAX_NUM_SEQS" ]] || is_uint "$MAX_NUM_SEQS" || die "MAX_NUM_SEQS=$MAX_NUM_SEQS: want a whole number"
[[ -z "$GPU_MEMORY_UTILIZATION" || "$GPU_MEMORY_UTILIZATION" =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] ||
	die "GPU_MEMORY_UTILIZATION=$GPU_MEMORY_UTILIZATION: want a fraction in (0, 1]"
[[ "$ENFORCE_EAGER" == 0 || "$ENFORCE_EAGER" == 1 ]] || die "ENFORCE_EAGER=$ENFORCE_EAGER: want 0 or 1"
command -v vllm >/dev/null || die "vllm is not on PATH; activate the environment that has it"

args=(--host "$HOST" --port "$PORT" --served-model-name "$SERVED_MODEL_NAME")
[[ -z "$MAX_MODEL_LEN" ]] || args+=(--max-model-len "$MAX_MODEL_LEN")
[[ -z "$GPU_MEMORY_UTILIZATION" ]] || args+=(--gpu-memory-utilization "$GPU_MEMORY_UTILIZATION")
[[ -z "$MAX_NUM_SEQS" ]] || args+=(--max-num-seqs "$MAX_NUM_SEQS")
[[ "$ENFORCE_EAGER" == 0 ]] || args+=(--enforce-eager)
if [[ -n "$EXTRA_ARGS" ]]; then
	read -r -a extra <<<"$EXTRA_ARGS"
	args+=("${extra[@]}")
fi

# Unbuffered output keeps the log lines' arrival times honest.
export PYTHONUNBUFFERED=1
echo "serve_slm_vllm.sh: exec vllm serve $MODEL ${args[*]}" >&2
exec vllm serve "$MODEL" "${args[@]}"
