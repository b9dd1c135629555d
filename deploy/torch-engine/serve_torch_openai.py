#!/usr/bin/env python3
"""A real-GPU, OpenAI-compatible streaming engine for checking ttftlab on
hardware where vLLM and model weights are not available.

It builds a model of the named architecture with RANDOM weights directly on
the GPU (no download), so every forward pass is real GPU work of the right
shape and size, and serves /health, /v1/models, /version and streaming
/v1/chat/completions and /v1/completions with vLLM's SSE framing and usage
chunks. Like vLLM it listens only once the model is ready. It logs its
startup phases with vLLM's message wording, prefixed "(TorchEngine pid=N)",
so ttftlab's log parser reads them; the output text is meaningless.

Generation is greedy, one request at a time (batch 1), always max_tokens.
"""
import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = f"(TorchEngine pid={os.getpid()}) "

CONFIGS = {
    # Hugging Face config.json values.
    "qwen/qwen2.5-1.5b-instruct": dict(model_type="qwen2", num_hidden_layers=28, hidden_size=1536, intermediate_size=8960,
                                        num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                        max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6),
    "qwen/qwen2.5-0.5b-instruct": dict(model_type="qwen2", num_hidden_layers=24, hidden_size=896, intermediate_size=4864,
                                        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                        max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6),
}


def log(msg):
    t = time.strftime("%m-%d %H:%M:%S")
    print(f"{PREFIX}INFO {t} [serve_torch_openai.py:1] {msg}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="Qwen/Qwen2.5-1.5B-Instruct")
    ap.add_argument("--served-model-name", default="")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-model-len", type=int, default=int(os.environ.get("MAX_MODEL_LEN") or 4096))
    args = ap.parse_args()
    served = args.served_model_name or args.model
    cfg = CONFIGS.get(args.model.lower())
    if cfg is None:
        print(f"ValueError: model {args.model!r} is not built in; choose one of {sorted(CONFIGS)}", flush=True)
        sys.exit(1)

    t0 = time.time()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    torch.cuda.init()
    # Like vLLM, the load starts after the imports and CUDA initialisation,
    # which therefore show as the bootstrap phase.
    log(f"Starting to load model {args.model}...")
    free0, total = torch.cuda.mem_get_info()
    conf = AutoConfig.for_model(**cfg)
    tw = time.time()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(conf, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    torch.cuda.synchronize()
    load_s = time.time() - tw
    gib = (free0 - torch.cuda.mem_get_info()[0]) / 2**30
    log(f"Loading weights took {load_s:.2f} seconds")
    log(f"Model loading took {gib:.4f} GiB and {time.time() - tw:.6f} seconds")
    ti = time.time()
    log(f"init engine (profile, create kv cache, warmup model) took {time.time() - ti:.2f} seconds")

    lock = threading.Lock()
    vocab = cfg["vocab_size"]

    def tokenize(text):
        # Deterministic: one token per whitespace-separated word.
        return [hash(w) % vocab for w in text.split()] or [0]

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
                self.send_json(200, {"version": "torch-engine " + torch.__version__})
            else:
                self.send_json(404, {"error": {"message": "Not Found", "type": "NotFoundError", "param": None, "code": 404}})

        def do_POST(self):
            chat = self.path == "/v1/chat/completions"
            if not chat and self.path != "/v1/completions":
                return self.send_json(404, {"error": {"message": "Not Found", "type": "NotFoundError", "param": None, "code": 404}})
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except Exception as e:
                return self.send_json(400, {"error": {"message": str(e), "type": "BadRequestError", "param": None, "code": 400}})
            if req.get("model") != served:
                return self.send_json(404, {"error": {"message": f"The model `{req.get('model')}` does not exist.", "type": "NotFoundError", "param": None, "code": 404}})
            text = " ".join(m.get("content", "") for m in req.get("messages", [])) if chat else req.get("prompt", "")
            ids = tokenize(text)
            max_tokens = int(req.get("max_tokens") or 16)
            if len(ids) + max_tokens > args.max_model_len:
                return self.send_json(400, {"error": {"message": f"This model's maximum context length is {args.max_model_len} tokens.", "type": "BadRequestError", "param": None, "code": 400}})
            stream = bool(req.get("stream"))
            cont = bool((req.get("stream_options") or {}).get("continuous_usage_stats"))
            rid = f"{'chatcmpl' if chat else 'cmpl'}-{int(time.time() * 1e6)}"
            obj = "chat.completion.chunk" if chat else "text_completion"

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

            with lock:
                if stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()

                def write(b):
                    self.wfile.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")
                    self.wfile.flush()

                out_text = []
                with torch.inference_mode():
                    x = torch.tensor([ids], device="cuda")
                    o = model(input_ids=x, use_cache=True)
                    past = o.past_key_values
                    nxt = o.logits[:, -1].argmax(-1)
                    for i in range(max_tokens):
                        tok = int(nxt.item())  # synchronises: the token exists now
                        piece = f" t{tok}"
                        out_text.append(piece)
                        if stream:
                            if i == 0 and chat:
                                write(chunk("", 0, role=True))
                            write(chunk(piece, i + 1, finish="length" if i == max_tokens - 1 else None))
                        if i < max_tokens - 1:
                            o = model(input_ids=nxt[:, None], past_key_values=past, use_cache=True)
                            past = o.past_key_values
                            nxt = o.logits[:, -1].argmax(-1)
                usage = {"prompt_tokens": len(ids), "total_tokens": len(ids) + max_tokens, "completion_tokens": max_tokens}
                if stream:
                    if (req.get("stream_options") or {}).get("include_usage"):
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

    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    log(f"Starting vLLM API server 0 on http://{args.host}:{args.port}")
    print("INFO:     Application startup complete.", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
