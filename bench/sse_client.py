#!/usr/bin/env python3
"""Reference Python SSE client for ttftlab's agent benchmarks.

It reads a stream the way vLLM's benchmark client does
(vllm/benchmarks/lib/endpoint_request_func.py, async_request_openai_completions
and async_request_openai_chat_completions): aiohttp, `async for chunk_bytes in
response.content`, strip, removeprefix("data: "), json.loads, then the choices
and usage fields. It runs a closed loop of --concurrency workers for --requests
requests against one server (normally internal/ssebench, started by the Go
benchmark BenchmarkPythonReference) and prints one JSON line of totals, CPU time
included, so the Go benchmark can compare its own cost per chunk.

Needs Debian's python3-aiohttp (apt-get install -y python3-aiohttp).
"""

import argparse
import asyncio
import json
import resource
import sys
import time

import aiohttp


async def one_request(session, url, payload, headers, totals):
    st = time.perf_counter()
    most_recent_timestamp = st
    ttft = 0.0
    itl = []
    generated_text = ""
    output_len = 0
    chunks = 0
    async with session.post(url=url, json=payload, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
        async for chunk_bytes in response.content:
            chunk_bytes = chunk_bytes.strip()
            if not chunk_bytes:
                continue
            chunk = chunk_bytes.decode("utf-8").removeprefix("data: ")
            if chunk == "[DONE]":
                continue
            chunks += 1
            data = json.loads(chunk)
            if choices := data.get("choices"):
                choice = choices[0]
                if "delta" in choice:  # chat
                    content = choice["delta"].get("content")
                else:  # completions
                    content = choice.get("text")
                timestamp = time.perf_counter()
                if ttft == 0.0:
                    ttft = timestamp - st
                else:
                    itl.append(timestamp - most_recent_timestamp)
                most_recent_timestamp = timestamp
                generated_text += content or ""
            if usage := data.get("usage"):
                output_len = usage.get("completion_tokens")
    totals["requests"] += 1
    totals["chunks"] += chunks
    totals["tokens"] += output_len
    totals["ttft_sum_s"] += ttft


async def run(args):
    url = args.url.rstrip("/") + ("/v1/completions" if args.api == "completions" else "/v1/chat/completions")
    payload = {"model": "m", "max_tokens": args.tokens, "stream": True,
               "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    if args.api == "completions":
        payload["prompt"] = "hi"
    else:
        payload["messages"] = [{"role": "user", "content": "hi"}]
    headers = {"X-Bench-Tokens": str(args.tokens), "X-Bench-Tokens-Per-Chunk": str(args.tokens_per_chunk)}
    totals = {"requests": 0, "chunks": 0, "tokens": 0, "ttft_sum_s": 0.0}
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=6 * 60 * 60)
    remaining = args.requests

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def worker():
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await one_request(session, url, payload, headers, totals)

        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    totals.update(wall_s=wall, cpu_s=cpu, concurrency=args.concurrency,
                  python=sys.version.split()[0], aiohttp=aiohttp.__version__)
    print(json.dumps(totals), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--api", choices=["chat", "completions"], default="chat")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--tokens", type=int, default=1000, help="tokens per stream (asks ssebench via X-Bench-Tokens)")
    p.add_argument("--tokens-per-chunk", type=int, default=1)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
