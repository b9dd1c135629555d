#!/usr/bin/env python3
"""Stream one chat request to an OpenAI-compatible server (vLLM, ttftlab sim); print one JSON line.

ttft_s is taken at the first chunk with non-empty delta.content (not the role-only chunk); total_tokens is the
final usage chunk's completion_tokens (the tokens generated), else the number of content chunks.
"""
import argparse, json, sys, time, urllib.error, urllib.request

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--url", default="http://127.0.0.1:8000")
p.add_argument("--model", required=True)
p.add_argument("--prompt", default="Say hello in one sentence.")
p.add_argument("--max-tokens", type=int, default=64)
a = p.parse_args()
body = {"model": a.model, "messages": [{"role": "user", "content": a.prompt}], "max_tokens": a.max_tokens,
        "stream": True, "stream_options": {"include_usage": True}}
req = urllib.request.Request(a.url.rstrip("/") + "/v1/chat/completions", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
t0, ttft, text, chunks, usage = time.perf_counter(), None, "", 0, None
try:
    resp = urllib.request.urlopen(req, timeout=600)
except urllib.error.HTTPError as e:  # vLLM's error body names the problem
    sys.exit(f"ttft_probe: {req.full_url}: HTTP {e.code}: {e.read().decode(errors='replace')[:500]}")
except urllib.error.URLError as e:
    sys.exit(f"ttft_probe: {req.full_url}: {e.reason}; is the server up (--url)?")
with resp:
    for line in resp:
        data = line.decode().strip().removeprefix("data:").strip()
        if not line.startswith(b"data:") or data == "[DONE]":
            continue
        ev = json.loads(data)
        if "error" in ev:  # vLLM's mid-stream error event
            sys.exit(f"ttft_probe: server error mid-stream: {json.dumps(ev['error'])[:500]}")
        usage = ev.get("usage") or usage
        content = ((ev.get("choices") or [{}])[0].get("delta") or {}).get("content")
        if content:
            ttft = time.perf_counter() - t0 if ttft is None else ttft
            text, chunks = text + content, chunks + 1
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": round(wall, 6), "ttft_s": None if ttft is None else round(ttft, 6),
                  "total_tokens": usage["completion_tokens"] if usage else chunks, "output_preview": text[:80]}))
