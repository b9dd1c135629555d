#!/usr/bin/env python3
"""A real-GPU, OpenAI-compatible streaming engine: the PyTorch reference
engine for checking ttftlab on hardware where vLLM and real weights are not
available. Random weights, not vLLM: its output text is meaningless.

--model is a local model directory holding a Qwen2 config.json
(deploy/torch-engine/models/ has Qwen2.5-1.5B-Instruct's). On first use the
engine writes random weights of that architecture there as
model.safetensors (about 3.1 GB in bf16 for the 1.5B model); every start
reads them from disk into CPU memory (filling the page cache), copies them
into GPU memory, allocates a KV cache and, unless --warmup none, runs the
serving shapes once. A missing directory whose name matches a bundled
config is created with that config.

Requests are served with continuous batching (torch_engine.Scheduler): up
to --max-num-seqs sequences at once, new prompts prefilled together within
--max-num-batched-tokens, one decode step a batch for the others. It serves
/health, /v1/models, /version, /metrics (vllm:num_requests_running and
vllm:num_requests_waiting) and streaming /v1/chat/completions and
/v1/completions with vLLM's SSE framing and usage chunks. Like vLLM it
listens only once the model is ready, and it logs its startup phases with
vLLM's wording, prefixed "(TorchEngine pid=N)", so ttftlab's log parser
reads them.
"""
import argparse
import json
import os
import queue
import shutil
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.join(HERE, "models")
PREFIX = f"(TorchEngine pid={os.getpid()}) "
MAX_BODY = 16 << 20


def log(msg, level="INFO"):
    t = time.strftime("%m-%d %H:%M:%S")
    print(f"{PREFIX}{level} {t} [serve_torch_openai.py:1] {msg}", flush=True)


def fail(msg):
    print(f"ValueError: {msg}", flush=True)
    sys.exit(2)


def env_int(name, default):
    v = os.environ.get(name, "")
    if v == "":
        return default
    try:
        return int(v)
    except ValueError:
        fail(f"{name}={v!r} is not a whole number: set it to a positive integer or unset it")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="absolute path of a model directory holding a Qwen2 config.json")
    ap.add_argument("--served-model-name", default="")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-model-len", type=int, default=env_int("MAX_MODEL_LEN", 4096))
    ap.add_argument("--max-num-seqs", type=int, default=env_int("MAX_NUM_SEQS", 64))
    ap.add_argument("--max-num-batched-tokens", type=int, default=env_int("MAX_NUM_BATCHED_TOKENS", 0),
                    help="prompt tokens prefilled in one step (default: max(8192, --max-model-len))")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    ap.add_argument("--device", default="", help="torch device (default: cuda when available)")
    ap.add_argument("--warmup", choices=["graphs", "eager", "none"], default=os.environ.get("TORCH_ENGINE_WARMUP") or "graphs",
                    help="graphs: run the serving shapes, then capture CUDA graphs of the decode step (logged as vLLM's graph capture); "
                         "eager: run the serving shapes only; none: the first requests pay")
    ap.add_argument("--write-weights-only", action="store_true", help="write the random weights if missing, then exit")
    a = ap.parse_args(argv)
    for name in ("max_model_len", "max_num_seqs"):
        if getattr(a, name) < 1:
            fail(f"--{name.replace('_', '-')} {getattr(a, name)} must be positive")
    if a.max_num_seqs > 1024:
        fail(f"--max-num-seqs {a.max_num_seqs} is above 1024: each sequence holds a KV slot of --max-model-len positions; lower it")
    if a.max_num_batched_tokens < 0:
        fail(f"--max-num-batched-tokens {a.max_num_batched_tokens} is negative: use a positive value, or 0 for the default")
    a.max_num_batched_tokens = a.max_num_batched_tokens or max(8192, a.max_model_len)
    if not os.path.isabs(a.model):
        fail(f"--model {a.model!r} is not an absolute path: pass a model directory such as "
             f"/var/tmp/ttftlab-torch-engine/Qwen2.5-1.5B-Instruct (bundled configs: {sorted(os.listdir(BUNDLED))})")
    return a


def ensure_weights(model_dir, dtype):
    """Creates model_dir from a bundled config when it is missing, and writes
    random weights when it has none. Returns seconds spent writing (0 when
    the weights were there)."""
    import torch_engine as te
    cfg_path = os.path.join(model_dir, "config.json")
    if not os.path.exists(cfg_path):
        src = os.path.join(BUNDLED, os.path.basename(model_dir.rstrip("/")), "config.json")
        if not os.path.exists(src):
            fail(f"{cfg_path} does not exist and no bundled config is named {os.path.basename(model_dir)!r}: "
                 f"copy a Qwen2 config.json there or name the directory after one of {sorted(os.listdir(BUNDLED))}")
        os.makedirs(model_dir, exist_ok=True)
        shutil.copyfile(src, cfg_path)
    if os.path.exists(os.path.join(model_dir, te.WEIGHTS_FILE)):
        return 0.0
    t = time.time()
    n = te.write_random_weights(model_dir, dtype=dtype)
    took = time.time() - t
    log(f"Wrote random weights to {os.path.join(model_dir, te.WEIGHTS_FILE)} ({n / 2**30:.2f} GiB) in {took:.2f} seconds")
    return took


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    served = args.served_model_name or args.model
    t0 = time.time()
    import torch
    import torch_engine as te
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        # Create the CUDA context now, as vLLM does before its load, so that
        # its ~0.5 GiB shows in the bootstrap and the GPU memory that rises
        # during the load is the weights alone.
        torch.zeros(1, device=device)
        torch.cuda.synchronize(device)
    try:
        ensure_weights(args.model, dtype)
        if args.write_weights_only:
            return
        cfg = te.read_config(args.model)
    except te.ConfigError as e:
        fail(str(e))
    # Like vLLM, the load starts after the imports and CUDA initialisation,
    # which therefore show as the bootstrap phase. On the H200 the ~0.5 GiB
    # of CUDA runtime memory appeared in NVML only at the first
    # mem_get_info, so that call comes before the load, too.
    cuda = device.type == "cuda"
    free0 = torch.cuda.mem_get_info(device)[0] if cuda else 0
    log(f"Starting to load model {args.model}...")
    tw = time.time()
    try:
        weights = te.read_weights(args.model, cfg, dtype)
    except te.ConfigError as e:
        fail(str(e))
    t_read = time.time() - tw
    log(f"Read {sum(t.numel() * t.element_size() for t in weights.values()) / 2**30:.2f} GiB of safetensors into CPU memory in {t_read:.2f} seconds")
    model = te.Model(cfg, weights, device, dtype, slots=0, max_len=args.max_model_len)
    del weights
    if cuda:
        torch.cuda.synchronize(device)
    load_s = time.time() - tw
    gib = (free0 - torch.cuda.mem_get_info(device)[0]) / 2**30 if cuda else 0.0
    log(f"Loading weights took {load_s:.2f} seconds")
    log(f"Model loading took {gib:.4f} GiB and {time.time() - tw:.6f} seconds")

    ti = time.time()
    model.allocate_kv(args.max_num_seqs)
    kv_tokens = args.max_num_seqs * args.max_model_len
    log(f"Available KV cache memory: {kv_tokens * model.kv_bytes_per_token() / 2**30:.2f} GiB")
    log(f"GPU KV cache size: {kv_tokens:,} tokens")
    log(f"Maximum concurrency for {args.max_model_len:,} tokens per request: {float(args.max_num_seqs):.2f}x")
    if args.warmup != "none":
        w = te.warm_up(model, args.max_num_seqs, min(256, args.max_model_len - 1))
        log(f"Warm-up of the serving shapes (prefill, decode at batch 1..{args.max_num_seqs}) took {w:.2f} seconds")
    if args.warmup == "graphs" and cuda:
        tg, freeg = time.time(), torch.cuda.mem_get_info(device)[0]
        n = model.capture_graphs(args.max_num_seqs)
        log(f"Captured {n} CUDA graphs of the decode step (batch buckets up to {args.max_num_seqs}, key windows up to {args.max_model_len})")
        log(f"Graph capturing finished in {time.time() - tg:.2f} secs, took {(freeg - torch.cuda.mem_get_info(device)[0]) / 2**30:.2f} GiB")
    log(f"init engine (profile, create kv cache, warmup model) took {time.time() - ti:.2f} seconds")

    sched = te.Scheduler(model, args.max_num_seqs, args.max_num_batched_tokens, log=lambda m: log(m, "ERROR"))
    vocab = cfg["vocab_size"]
    srv = ThreadingHTTPServer((args.host, args.port), make_handler(args, served, sched, vocab, t0, torch.__version__))
    srv.daemon_threads = True
    log(f"Starting vLLM API server 0 on http://{args.host}:{args.port}")
    print("INFO:     Application startup complete.", flush=True)
    try:
        srv.serve_forever()
    finally:
        sched.close()


def error_body(code, msg, typ):
    return {"error": {"message": msg, "type": typ, "param": None, "code": code}}


def parse_request(raw, served, chat):
    """Checks an untrusted request body; returns (text, max_tokens, stream, stream_options) or raises ValueError."""
    req = json.loads(raw)
    if not isinstance(req, dict):
        raise ValueError("the body must be a JSON object")
    if req.get("model") != served:
        raise LookupError(f"The model `{req.get('model')}` does not exist.")
    if chat:
        msgs = req.get("messages")
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and isinstance(m.get("content", ""), str) for m in msgs):
            raise ValueError("messages must be a list of objects with string content")
        text = " ".join(m.get("content", "") for m in msgs)
    else:
        text = req.get("prompt", "")
        if not isinstance(text, str):
            raise ValueError("prompt must be a string")
    mt = req.get("max_tokens", 16)
    if mt is None:
        mt = 16
    if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {mt!r}")
    so = req.get("stream_options") or {}
    if not isinstance(so, dict):
        raise ValueError("stream_options must be an object")
    return text, mt, bool(req.get("stream")), so


def make_handler(args, served, sched, vocab, t0, torch_version):
    import torch_engine as te

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            pass

        def send_json(self, code, obj):
            b = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)

        def do_GET(self):
            if self.path == "/health":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [{"id": served, "object": "model", "created": int(t0),
                                     "owned_by": "torch-engine", "root": args.model, "max_model_len": args.max_model_len}]})
            elif self.path == "/version":
                self.send_json(200, {"version": "torch-engine " + torch_version})
            elif self.path == "/metrics":
                run, wait = sched.counts()
                lab = '{model_name="%s"}' % served.replace("\\", "\\\\").replace('"', '\\"')
                b = (f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{lab} {run}\n"
                     f"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{lab} {wait}\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)
            else:
                self.send_json(404, error_body(404, "Not Found", "NotFoundError"))

        def do_POST(self):
            chat = self.path == "/v1/chat/completions"
            if not chat and self.path != "/v1/completions":
                return self.send_json(404, error_body(404, "Not Found", "NotFoundError"))
            try:
                n = int(self.headers.get("Content-Length", 0))
                if n < 0 or n > MAX_BODY:
                    raise ValueError(f"Content-Length {n} is outside 0..{MAX_BODY}")
                text, max_tokens, stream, so = parse_request(self.rfile.read(n), served, chat)
            except LookupError as e:
                return self.send_json(404, error_body(404, str(e), "NotFoundError"))
            except ValueError as e:
                return self.send_json(400, error_body(400, str(e), "BadRequestError"))
            ids = te.tokenize(text, vocab)
            q = queue.Queue()
            req = te.Request(ids, max_tokens, lambda r, tok, done: q.put((tok, done)))
            try:
                sched.submit(req)
            except (ValueError, RuntimeError) as e:
                return self.send_json(400, error_body(400, str(e), "BadRequestError"))
            rid = f"{'chatcmpl' if chat else 'cmpl'}-{int(time.time() * 1e6)}"
            obj = "chat.completion.chunk" if chat else "text_completion"
            cont = bool(so.get("continuous_usage_stats"))

            def chunk(piece, n_out, role=False, finish=None):
                if chat:
                    delta = {"role": "assistant", "content": ""} if role else {"content": piece}
                    c = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                else:
                    c = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish, "stop_reason": None}
                d = {"id": rid, "object": obj, "created": int(time.time()), "model": served, "choices": [c]}
                if cont:
                    d["usage"] = {"prompt_tokens": len(ids), "total_tokens": len(ids) + n_out, "completion_tokens": n_out}
                return b"data: " + json.dumps(d, separators=(",", ":")).encode() + b"\n\n"

            def write(b):
                self.wfile.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")
                self.wfile.flush()

            out_text = []
            try:
                if stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                i = 0
                while True:
                    tok, done = q.get()
                    if tok is None:
                        raise RuntimeError("the engine failed this request")
                    piece = f" t{tok}"
                    out_text.append(piece)
                    if stream:
                        if i == 0 and chat:
                            write(chunk("", 0, role=True))
                        write(chunk(piece, i + 1, finish="length" if done else None))
                    i += 1
                    if done:
                        break
            except (OSError, RuntimeError):
                req.cancelled = True
                self.close_connection = True
                return
            usage = {"prompt_tokens": len(ids), "total_tokens": len(ids) + max_tokens, "completion_tokens": max_tokens}
            if stream:
                if so.get("include_usage"):
                    d = {"id": rid, "object": obj, "created": int(time.time()), "model": served, "choices": [], "usage": usage}
                    write(b"data: " + json.dumps(d, separators=(",", ":")).encode() + b"\n\n")
                write(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            else:
                msg = {"index": 0, "finish_reason": "length"}
                if chat:
                    msg["message"] = {"role": "assistant", "content": "".join(out_text)}
                else:
                    msg["text"] = "".join(out_text)
                self.send_json(200, {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                                     "model": served, "choices": [msg], "usage": usage})

    return Handler


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
