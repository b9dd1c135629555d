"""The model and scheduler of the PyTorch reference engine.

A Qwen2 decoder (the Hugging Face architecture and tensor names) written in
plain PyTorch, so that the engine controls its KV cache: one slot of
max_model_len positions per running sequence. Weights are random, written
once as safetensors into the model directory and read from there at every
start (disk -> page cache -> CPU tensors -> GPU), so a start after the page
cache was emptied pays the storage read that a real model load pays.

The Scheduler is iteration-level (continuous) batching, as vLLM does it:
each step admits waiting requests while there are free slots and the
batched-token budget allows, prefills the admitted ones together, and runs
one decode step for every sequence that was already running. Generation is
greedy and always max_tokens long.
"""
import json
import os
import threading
import time
import zlib
from collections import deque

import torch
import torch.nn.functional as F

WEIGHTS_FILE = "model.safetensors"

# The config.json fields the engine needs, and the values it supports.
REQUIRED = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
            "num_key_value_heads", "vocab_size", "rms_norm_eps", "rope_theta")


class ConfigError(ValueError):
    """A config.json the engine cannot serve; the message names the fix."""


def read_config(model_dir):
    """Reads and checks model_dir/config.json."""
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
        cfg = json.loads(raw)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: --model must be a directory holding a Qwen2 config.json "
                          f"(copy deploy/torch-engine/models/Qwen2.5-1.5B-Instruct/config.json there)") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not readable JSON ({e}): restore it from deploy/torch-engine/models/") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} holds {type(cfg).__name__}, not a JSON object: restore it from deploy/torch-engine/models/")
    if cfg.get("model_type") != "qwen2":
        raise ConfigError(f"{path}: model_type {cfg.get('model_type')!r} is not supported: the engine implements qwen2 only")
    for k in REQUIRED:
        v = cfg.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"{path}: {k} is {v!r}: it must be a positive number")
    for k in REQUIRED[:6]:
        if cfg[k] != int(cfg[k]) or cfg[k] > 1 << 20:
            raise ConfigError(f"{path}: {k} is {cfg[k]!r}: it must be a whole number up to {1 << 20}")
        cfg[k] = int(cfg[k])
    if cfg["hidden_size"] % cfg["num_attention_heads"] or cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
        raise ConfigError(f"{path}: hidden_size {cfg['hidden_size']} must divide by num_attention_heads "
                          f"{cfg['num_attention_heads']}, which must divide by num_key_value_heads {cfg['num_key_value_heads']}")
    cfg.setdefault("tie_word_embeddings", False)
    return cfg


def weight_shapes(cfg):
    """Returns the Hugging Face tensor names and shapes of a Qwen2 model."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    s = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        s.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                  p + "self_attn.q_proj.weight": (h, h), p + "self_attn.q_proj.bias": (h,),
                  p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.k_proj.bias": (kv,),
                  p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.v_proj.bias": (kv,),
                  p + "self_attn.o_proj.weight": (h, h),
                  p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i)})
    if not cfg["tie_word_embeddings"]:
        s["lm_head.weight"] = (v, h)
    return s


def write_random_weights(model_dir, dtype=torch.bfloat16, seed=0, device=None):
    """Writes random weights of model_dir's config as model_dir/model.safetensors.

    The file is written under a temporary name and renamed, so a crash
    leaves no half-written weights. Returns the file's size in bytes.
    """
    from safetensors.torch import save_file
    cfg = read_config(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator(device=device).manual_seed(seed)
    std = float(cfg.get("initializer_range", 0.02))
    tensors = {}
    for name, shape in weight_shapes(cfg).items():
        if name.endswith("norm.weight"):
            t = torch.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            t = torch.zeros(shape, dtype=dtype)
        else:
            t = (torch.randn(shape, generator=g, device=device, dtype=torch.float32) * std).to(dtype).cpu()
        tensors[name] = t.contiguous()
    path = os.path.join(model_dir, WEIGHTS_FILE)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata={"format": "pt", "note": "random weights written by deploy/torch-engine"})
    os.replace(tmp, path)
    return os.path.getsize(path)


def read_weights(model_dir, cfg, dtype):
    """Reads model_dir's safetensors into CPU memory, checking every name, shape and dtype.

    Reading goes through the page cache: a cold start fills it here.
    """
    from safetensors import safe_open
    path = os.path.join(model_dir, WEIGHTS_FILE)
    want = weight_shapes(cfg)
    out = {}
    with safe_open(path, framework="pt", device="cpu") as f:
        names = set(f.keys())
        missing, extra = sorted(set(want) - names), sorted(names - set(want) - {"lm_head.weight"})
        if missing or extra:
            raise ConfigError(f"{path} does not match config.json (missing {missing[:3]}, unexpected {extra[:3]}): "
                              f"delete it and let the engine write it again")
        for name, shape in want.items():
            t = f.get_tensor(name)
            if tuple(t.shape) != shape:
                raise ConfigError(f"{path}: {name} has shape {tuple(t.shape)}, config.json needs {shape}: delete the file to rewrite it")
            # A copy in process memory: the read happens here, before the
            # copy to the GPU, even where safetensors maps the file lazily.
            out[name] = t.to(dtype, copy=True)
    return out


def rms_norm(x, w, eps):
    """Qwen2RMSNorm: normalised in float32, scaled in the input dtype."""
    dt = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dt)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _sdpa_gqa():
    """Whether scaled_dot_product_attention takes enable_gqa (torch >= 2.5)."""
    try:
        q = torch.zeros(1, 2, 1, 4)
        F.scaled_dot_product_attention(q, q[:, :1], q[:, :1], enable_gqa=True)
        return True
    except TypeError:
        return False


def buckets(limit, first=1):
    """Powers of two from first up to limit, and limit itself."""
    out, b = [], first
    while b < limit:
        out.append(b)
        b *= 2
    return out + [limit]


class Model:
    """A Qwen2 causal LM over weights on one device, with a slot KV cache.

    k_cache and v_cache are [layers, slots + 1, max_len, kv_heads,
    head_dim]; slot s holds one sequence's keys and values at positions
    0..len-1, and the last slot is scratch for the padding rows of a
    CUDA-graph batch. q/k/v and gate/up projections are fused at load, so
    a layer launches fewer kernels.
    """

    def __init__(self, cfg, weights, device, dtype, slots, max_len):
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg["num_key_value_heads"]
        self.head_dim = cfg["hidden_size"] // self.heads
        self.eps = float(cfg["rms_norm_eps"])
        self.gqa = _sdpa_gqa()
        dev = self.device
        w = {}
        for k in ("model.embed_tokens.weight", "model.norm.weight"):
            w[k] = weights[k].to(dev)
        w["lm_head.weight"] = weights["lm_head.weight"].to(dev) if "lm_head.weight" in weights else w["model.embed_tokens.weight"]
        self.lw = []
        for n in range(self.layers):
            p = f"model.layers.{n}."
            g = lambda k: weights[p + k]  # noqa: E731
            self.lw.append((
                g("input_layernorm.weight").to(dev),
                torch.cat([g("self_attn.q_proj.weight"), g("self_attn.k_proj.weight"), g("self_attn.v_proj.weight")]).to(dev),
                torch.cat([g("self_attn.q_proj.bias"), g("self_attn.k_proj.bias"), g("self_attn.v_proj.bias")]).to(dev),
                g("self_attn.o_proj.weight").to(dev),
                g("post_attention_layernorm.weight").to(dev),
                torch.cat([g("mlp.gate_proj.weight"), g("mlp.up_proj.weight")]).to(dev),
                g("mlp.down_proj.weight").to(dev),
            ))
        self.w = w
        self.slots, self.max_len = 0, max_len
        inv = 1.0 / (float(cfg["rope_theta"]) ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        f = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)
        emb = torch.cat((f, f), dim=-1)
        self.cos, self.sin = emb.cos().to(dev, dtype), emb.sin().to(dev, dtype)
        self.k_cache = self.v_cache = None
        self.graphs = {}
        if slots:
            self.allocate_kv(slots)

    def allocate_kv(self, slots):
        """Allocates the KV cache: slots sequences of max_len positions each, and a scratch slot."""
        shape = (self.layers, slots + 1, self.max_len, self.kv_heads, self.head_dim)
        self.k_cache = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v_cache = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.slots = slots

    def kv_bytes_per_token(self):
        return 2 * self.layers * self.kv_heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()

    @torch.inference_mode()
    def forward(self, ids, pos, slots, lens, window=None):
        """Runs ids [B, T] at positions pos [B, T] for sequences in slots [B].

        lens [B] is each sequence's length after this call (the key
        positions it may attend to are 0..lens-1). Returns the logits at
        the last real position of each sequence: position lens-1. Keys and
        values of every input position are written to the cache; padding
        positions past lens are written too and later overwritten. window,
        when given, is how many key positions to attend over (at least
        lens.max()); it keeps shapes fixed for CUDA graphs.
        """
        B, T = ids.shape
        w = self.w
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        x = F.embedding(ids, w["model.embed_tokens.weight"])
        cos, sin = self.cos[pos].unsqueeze(2), self.sin[pos].unsqueeze(2)
        kmax = window or int(lens.max())
        kpos = torch.arange(kmax, device=self.device)
        # mask[b, 0, t, j]: query t of sequence b sees key j when j <= pos[b, t] and j < lens[b].
        mask = ((kpos[None, None, :] <= pos[:, :, None]) & (kpos[None, None, :] < lens[:, None, None])).unsqueeze(1)
        rows = slots[:, None].expand(B, T)
        safe_pos = pos.clamp(max=self.max_len - 1)
        for n, (ln1, wqkv, bqkv, wo, ln2, wgu, wd) in enumerate(self.lw):
            h = rms_norm(x, ln1, self.eps)
            qkv = F.linear(h, wqkv, bqkv).view(B, T, H + 2 * KV, D)
            qk = qkv[:, :, :H + KV]
            qk = qk * cos + rotate_half(qk) * sin
            q, k, v = qk[:, :, :H], qk[:, :, H:], qkv[:, :, H + KV:]
            kc, vc = self.k_cache[n], self.v_cache[n]
            kc[rows, safe_pos] = k
            vc[rows, safe_pos] = v
            K = kc[slots, :kmax].transpose(1, 2)
            V = vc[slots, :kmax].transpose(1, 2)
            if self.gqa:
                a = F.scaled_dot_product_attention(q.transpose(1, 2), K, V, attn_mask=mask, enable_gqa=KV != H)
            else:
                r = H // KV
                a = F.scaled_dot_product_attention(q.transpose(1, 2), K.repeat_interleave(r, 1), V.repeat_interleave(r, 1), attn_mask=mask)
            x = x + F.linear(a.transpose(1, 2).reshape(B, T, H * D), wo)
            h = rms_norm(x, ln2, self.eps)
            gate, up = F.linear(h, wgu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, wd)
        last = (lens - pos[:, 0] - 1).clamp(min=0, max=T - 1)
        x = x[torch.arange(B, device=self.device), last]
        x = rms_norm(x, w["model.norm.weight"], self.eps)
        return F.linear(x, w["lm_head.weight"])

    def capture_graphs(self, max_batch):
        """Captures one CUDA graph of a decode step for each batch-size
        bucket up to max_batch and each key-window bucket up to max_len.
        Returns the number of graphs."""
        pool = None
        stream = torch.cuda.Stream(self.device)
        for W in buckets(self.max_len, min(256, self.max_len)):
            for B in buckets(max_batch):
                st = {"ids": torch.zeros((B, 1), dtype=torch.long, device=self.device),
                      "pos": torch.zeros((B, 1), dtype=torch.long, device=self.device),
                      "slots": torch.full((B,), self.slots, dtype=torch.long, device=self.device),
                      "lens": torch.ones(B, dtype=torch.long, device=self.device)}
                stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(stream):
                    for _ in range(2):
                        self.forward(st["ids"], st["pos"], st["slots"], st["lens"], window=W)
                torch.cuda.current_stream(self.device).wait_stream(stream)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool):
                    out = self.forward(st["ids"], st["pos"], st["slots"], st["lens"], window=W)
                pool = g.pool()
                self.graphs[(B, W)] = (g, st, out)
        torch.cuda.synchronize(self.device)
        return len(self.graphs)

    def decode(self, ids, pos, slots, lens, need):
        """One decode step (T = 1): through a captured graph when one fits,
        else eagerly. need is lens.max(), known on the host."""
        b = ids.shape[0]
        if self.graphs:
            fit = [k for k in self.graphs if k[0] >= b and k[1] >= need]
            if fit:
                g, st, out = self.graphs[min(fit)]
                B = st["ids"].shape[0]
                st["ids"][:b].copy_(ids)
                st["pos"][:b].copy_(pos)
                st["slots"][:b].copy_(slots)
                st["lens"][:b].copy_(lens)
                if b < B:  # padding rows write to the scratch slot
                    st["ids"][b:].zero_()
                    st["pos"][b:].zero_()
                    st["slots"][b:].fill_(self.slots)
                    st["lens"][b:].fill_(1)
                g.replay()
                return out[:b]
        return self.forward(ids, pos, slots, lens)


def tokenize(text, vocab):
    """One token per whitespace-separated word, stable across processes."""
    return [zlib.crc32(wd.encode()) % vocab for wd in text.split()] or [0]


class Request:
    """One generation: prompt ids in, token ids out through on_token."""

    def __init__(self, ids, max_tokens, on_token):
        self.ids, self.max_tokens, self.on_token = list(ids), max_tokens, on_token
        self.out = []
        self.slot = -1
        self.cancelled = False
        self.arrived = time.monotonic()


class Scheduler:
    """Iteration-level batching over a Model, run by one thread that Close waits for.

    on_token(req, token, done) is called from the scheduler's thread; it
    must not block for long.
    """

    def __init__(self, model, max_num_seqs, max_num_batched_tokens, log=None):
        if max_num_seqs < 1 or max_num_seqs > model.slots:
            raise ValueError(f"max_num_seqs {max_num_seqs} must be in 1..{model.slots} (the KV cache's slots)")
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens {max_num_batched_tokens} must be positive")
        self.model, self.max_num_seqs, self.budget = model, max_num_seqs, max_num_batched_tokens
        self.log = log or (lambda m: None)
        self.waiting = deque()
        self.running = []
        self.free = list(range(max_num_seqs))[::-1]
        self.cv = threading.Condition()
        self.closed = False
        self.steps = 0
        self.max_batch = 0
        self.thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self.thread.start()

    def submit(self, req):
        """Queues req; raises ValueError when it can never fit."""
        n = len(req.ids) + req.max_tokens
        if n > self.model.max_len:
            raise ValueError(f"This model's maximum context length is {self.model.max_len} tokens. "
                             f"However, you requested {n} tokens ({len(req.ids)} in the messages, {req.max_tokens} in the completion).")
        if len(req.ids) > self.budget:
            raise ValueError(f"the prompt has {len(req.ids)} tokens, more than --max-num-batched-tokens {self.budget}: "
                             f"shorten it or raise --max-num-batched-tokens")
        with self.cv:
            if self.closed:
                raise RuntimeError("the engine is shutting down")
            self.waiting.append(req)
            self.cv.notify()

    def counts(self):
        with self.cv:
            return len(self.running), len(self.waiting)

    def close(self):
        with self.cv:
            self.closed = True
            self.cv.notify()
        self.thread.join()

    def _admit(self):
        new, tokens = [], 0
        while self.waiting and self.free and len(self.running) + len(new) < self.max_num_seqs:
            r = self.waiting[0]
            if r.cancelled:
                self.waiting.popleft()
                continue
            if new and tokens + len(r.ids) > self.budget:
                break
            self.waiting.popleft()
            r.slot = self.free.pop()
            tokens += len(r.ids)
            new.append(r)
        return new

    def _finish(self, r):
        self.free.append(r.slot)
        r.slot = -1

    def step(self):
        """Runs one iteration; returns False when there was nothing to do."""
        with self.cv:
            for r in self.running:
                if r.cancelled:
                    self._finish(r)
            self.running = [r for r in self.running if r.slot >= 0]
            new = self._admit()
            old = list(self.running)
        if not new and not old:
            return False
        m, dev = self.model, self.model.device
        emitted = []
        if new:
            T = max(len(r.ids) for r in new)
            ids = torch.zeros((len(new), T), dtype=torch.long)
            for b, r in enumerate(new):
                ids[b, :len(r.ids)] = torch.tensor(r.ids)
            pos = torch.arange(T).expand(len(new), T)
            lens = torch.tensor([len(r.ids) for r in new])
            slots = torch.tensor([r.slot for r in new])
            logits = m.forward(ids.to(dev), pos.to(dev), slots.to(dev), lens.to(dev))
            emitted += list(zip(new, logits.argmax(-1).tolist()))
        if old:
            ids = torch.tensor([[r.out[-1]] for r in old])
            pos = torch.tensor([[len(r.ids) + len(r.out) - 1] for r in old])
            lens = pos[:, 0] + 1
            slots = torch.tensor([r.slot for r in old])
            logits = m.decode(ids.to(dev), pos.to(dev), slots.to(dev), lens.to(dev), int(lens.max()))
            emitted += list(zip(old, logits.argmax(-1).tolist()))
        self.steps += 1
        self.max_batch = max(self.max_batch, len(new) + len(old))
        with self.cv:
            for r, tok in emitted:
                r.out.append(tok)
            done = [r for r, _ in emitted if len(r.out) >= r.max_tokens]
            for r in done:
                self._finish(r)
            self.running = [r for r in old + new if r.slot >= 0]
        for r, tok in emitted:
            try:
                r.on_token(r, tok, len(r.out) >= r.max_tokens)
            except Exception:  # a consumer's failure ends its request only
                r.cancelled = True
        return True

    def _loop(self):
        while True:
            with self.cv:
                while not self.closed and not self.waiting and not self.running:
                    self.cv.wait()
                if self.closed:
                    return
            try:
                self.step()
            except Exception as e:  # fail every request rather than hang them
                self.log(f"ERROR scheduler step failed: {e!r}")
                with self.cv:
                    victims = self.running + list(self.waiting)
                    self.running, self.waiting = [], deque()
                    self.free = list(range(self.max_num_seqs))[::-1]
                for r in victims:
                    try:
                        r.on_token(r, None, True)
                    except Exception:
                        pass


def warm_up(model, max_num_seqs, prompt_len):
    """Runs the shapes serving will run, eagerly: one prefill and decode
    steps at batch sizes 1, 2, 4, ... up to max_num_seqs. Returns the
    seconds taken."""
    t = time.time()
    dev = model.device
    n = min(prompt_len, model.max_len - 1)
    model.forward(torch.zeros((1, n), dtype=torch.long, device=dev), torch.arange(n, device=dev)[None],
                  torch.zeros(1, dtype=torch.long, device=dev), torch.tensor([n], device=dev))
    b = 1
    while True:
        bb = min(b, max_num_seqs)
        model.forward(torch.zeros((bb, 1), dtype=torch.long, device=dev), torch.full((bb, 1), n, device=dev),
                      torch.arange(bb, device=dev), torch.full((bb,), n + 1, device=dev))
        if bb == max_num_seqs:
            break
        b *= 2
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.time() - t
