"""Tests of the PyTorch reference engine, on a tiny Qwen2 on the CPU.

Run: python3 -m unittest discover -s deploy/torch-engine -v
They need torch and safetensors and skip, saying so, without them; the
comparison against Hugging Face's Qwen2 also needs transformers.
"""
import http.client
import json
import os
import random
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import torch
    import safetensors  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the host
    raise unittest.SkipTest(f"torch engine tests need torch and safetensors ({e}); run them where torch is installed")

import serve_torch_openai as srv  # noqa: E402
import torch_engine as te  # noqa: E402

TINY = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 97, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": True, "max_position_embeddings": 256,
        # A wide init spread makes the greedy tokens of different positions
        # differ, so that mix-ups between sequences show.
        "initializer_range": 0.5}


def tiny_dir(tmp, cfg=None):
    d = os.path.join(tmp, "tiny")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg or TINY, f)
    return d


def tiny_model(tmp, slots=8, max_len=64):
    d = tiny_dir(tmp)
    te.write_random_weights(d, dtype=torch.float32, device="cpu")
    cfg = te.read_config(d)
    w = te.read_weights(d, cfg, torch.float32)
    return te.Model(cfg, w, "cpu", torch.float32, slots=slots, max_len=max_len), cfg, d


class ConfigTest(unittest.TestCase):
    def test_bad_configs_name_the_value(self):
        cases = {
            "missing": (None, "does not exist"),
            "not json": ("{", "not readable JSON"),
            "not an object": ("[1]", "not a JSON object"),
            "llama": (dict(TINY, model_type="llama"), "'llama' is not supported"),
            "zero layers": (dict(TINY, num_hidden_layers=0), "num_hidden_layers is 0"),
            "string size": (dict(TINY, hidden_size="32"), "hidden_size is '32'"),
            "bool heads": (dict(TINY, num_attention_heads=True), "num_attention_heads is True"),
            "fractional": (dict(TINY, vocab_size=9.5), "vocab_size is 9.5"),
            "heads do not divide": (dict(TINY, num_attention_heads=5), "must divide"),
        }
        for name, (content, want) in cases.items():
            with self.subTest(name), tempfile.TemporaryDirectory() as tmp:
                if content is not None:
                    with open(os.path.join(tmp, "config.json"), "w") as f:
                        f.write(content if isinstance(content, str) else json.dumps(content))
                with self.assertRaises(te.ConfigError) as cm:
                    te.read_config(tmp)
                self.assertIn(want, str(cm.exception))

    def test_bundled_config_is_qwen25_15b(self):
        cfg = te.read_config(os.path.join(HERE, "models", "Qwen2.5-1.5B-Instruct"))
        n = sum(torch.Size(s).numel() for s in te.weight_shapes(cfg).values())
        # Qwen2.5-1.5B has 1.54 billion parameters (tied embeddings): 3.1 GB in bf16.
        self.assertAlmostEqual(n / 1e9, 1.54, delta=0.01)


class WeightsTest(unittest.TestCase):
    def test_round_trip_and_hf_names(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = tiny_dir(tmp)
            n = te.write_random_weights(d, dtype=torch.bfloat16, device="cpu")
            self.assertGreater(n, 0)
            self.assertFalse(os.path.exists(os.path.join(d, te.WEIGHTS_FILE + ".tmp")))
            w = te.read_weights(d, te.read_config(d), torch.bfloat16)
            self.assertIn("model.layers.1.self_attn.q_proj.bias", w)
            self.assertNotIn("lm_head.weight", w)
            self.assertEqual(w["model.embed_tokens.weight"].dtype, torch.bfloat16)
            self.assertGreater(float(w["model.embed_tokens.weight"].float().std()), 0)

    def test_mismatched_file_is_refused(self):
        from safetensors.torch import save_file
        with tempfile.TemporaryDirectory() as tmp:
            d = tiny_dir(tmp)
            te.write_random_weights(d, dtype=torch.float32, device="cpu")
            cfg = te.read_config(d)
            cases = {"wrong shape": ({**TINY, "intermediate_size": 48}, "has shape"),
                     "missing tensors": ({**TINY, "num_hidden_layers": 3}, "does not match")}
            for name, (other, want) in cases.items():
                with self.subTest(name):
                    with self.assertRaises(te.ConfigError) as cm:
                        te.read_weights(d, dict(cfg, **other), torch.float32)
                    self.assertIn(want, str(cm.exception))
            save_file({"x": torch.zeros(1)}, os.path.join(d, te.WEIGHTS_FILE))
            with self.assertRaises(te.ConfigError):
                te.read_weights(d, cfg, torch.float32)


class ModelTest(unittest.TestCase):
    def test_incremental_decode_matches_full_forward(self):
        with tempfile.TemporaryDirectory() as tmp:
            m, cfg, _ = tiny_model(tmp)
            ids = torch.tensor([[5, 17, 3, 88, 41, 9, 60]])
            T = ids.shape[1]
            full = []
            for t in range(1, T + 1):  # logits of every prefix, each from scratch in slot 1
                full.append(m.forward(ids[:, :t], torch.arange(t)[None], torch.tensor([1]), torch.tensor([t])))
            # Prefill 3 tokens in slot 0, then decode one at a time.
            inc = [m.forward(ids[:, :3], torch.arange(3)[None], torch.tensor([0]), torch.tensor([3]))]
            for t in range(3, T):
                inc.append(m.forward(ids[:, t:t + 1], torch.tensor([[t]]), torch.tensor([0]), torch.tensor([t + 1])))
            for t, got in zip(range(3, T + 1), inc):
                torch.testing.assert_close(got, full[t - 1], rtol=1e-4, atol=1e-4)

    def test_matches_hugging_face_qwen2(self):
        try:
            from transformers import Qwen2Config, Qwen2ForCausalLM
        except ImportError as e:
            self.skipTest(f"transformers is not installed ({e})")
        with tempfile.TemporaryDirectory() as tmp:
            m, cfg, d = tiny_model(tmp)
            hf = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in TINY.items() if k != "model_type"})).eval()
            sd = te.read_weights(d, cfg, torch.float32)
            missing, unexpected = hf.load_state_dict(sd, strict=False)
            self.assertEqual([k for k in missing if k != "lm_head.weight"], [])
            self.assertEqual(unexpected, [])
            hf.tie_weights()
            ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
            with torch.no_grad():
                want = hf(input_ids=ids).logits[:, -1]
            got = m.forward(ids, torch.arange(6)[None], torch.tensor([0]), torch.tensor([6]))
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def collect(sched, prompts, max_tokens):
    done = threading.Event()
    out = {}
    left = [len(prompts)]
    lock = threading.Lock()

    def on_token(r, tok, fin):
        if fin:
            with lock:
                out[r.key] = list(r.out) if tok is not None else None
                left[0] -= 1
                if left[0] == 0:
                    done.set()
    for i, p in enumerate(prompts):
        r = te.Request(p, max_tokens, on_token)
        r.key = i
        sched.submit(r)
    if not done.wait(60):
        raise AssertionError("requests did not finish within 60 s")
    return [out[i] for i in range(len(prompts))]


class GraphTest(unittest.TestCase):
    @unittest.skipUnless(torch.cuda.is_available(), "CUDA graphs need a GPU")
    def test_graph_decode_matches_eager(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = tiny_dir(tmp)
            te.write_random_weights(d, dtype=torch.float32, device="cpu")
            cfg = te.read_config(d)
            m = te.Model(cfg, te.read_weights(d, cfg, torch.float32), "cuda", torch.float32, slots=4, max_len=300)
            self.assertEqual(m.capture_graphs(4), len(te.buckets(4)) * len(te.buckets(300, 256)))
            prompts = [[3, 1, 4, 1, 5], [9, 2, 6]]
            s = te.Scheduler(m, 4, 64)
            try:
                graphed = collect(s, prompts, 8)
            finally:
                s.close()
            m.graphs = {}
            s = te.Scheduler(m, 4, 64)
            try:
                eager = collect(s, prompts, 8)
            finally:
                s.close()
            self.assertEqual(graphed, eager)


class SchedulerTest(unittest.TestCase):
    def test_batched_equals_one_at_a_time(self):
        prompts = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7, 9], [3, 2], [38, 46, 26, 43]]
        with tempfile.TemporaryDirectory() as tmp:
            m, _, _ = tiny_model(tmp)
            one = te.Scheduler(m, 1, 64)
            try:
                alone = [collect(one, [p], 6)[0] for p in prompts]
            finally:
                one.close()
            many = te.Scheduler(m, 4, 64)
            try:
                together = collect(many, prompts, 6)
                self.assertGreater(many.max_batch, 1, "requests were never batched")
                self.assertLessEqual(many.max_batch, 4)
            finally:
                many.close()
        self.assertEqual(together, alone)
        self.assertTrue(all(len(o) == 6 for o in alone))

    def test_token_budget_limits_prefill(self):
        with tempfile.TemporaryDirectory() as tmp:
            m, _, _ = tiny_model(tmp)
            s = te.Scheduler(m, 4, 6)
            s.close()  # drive steps by hand
            for p in ([1, 2, 3, 4], [5, 6, 7, 8], [9, 10]):
                s.waiting.append(te.Request(p, 3, lambda *a: None))
            new = s._admit()
            self.assertEqual([len(r.ids) for r in new], [4], "a second 4-token prompt must wait for the next step")

    def test_submit_rejects_what_cannot_fit(self):
        with tempfile.TemporaryDirectory() as tmp:
            m, _, _ = tiny_model(tmp, slots=2, max_len=16)
            s = te.Scheduler(m, 2, 8)
            try:
                cases = {"context": ([1] * 10, 8, "maximum context length is 16"),
                         "budget": ([1] * 9, 2, "more than --max-num-batched-tokens 8")}
                for name, (ids, mt, want) in cases.items():
                    with self.subTest(name), self.assertRaises(ValueError) as cm:
                        s.submit(te.Request(ids, mt, lambda *a: None))
                    self.assertIn(want, str(cm.exception))
            finally:
                s.close()
            with self.assertRaises(ValueError):
                te.Scheduler(m, 3, 8)  # more sequences than KV slots


class RequestParsingTest(unittest.TestCase):
    def test_table(self):
        cases = {
            "chat ok": (b'{"model":"m","messages":[{"role":"user","content":"a b"}],"max_tokens":3,"stream":true}', True, None),
            "completion ok": (b'{"model":"m","prompt":"a b c"}', False, None),
            "wrong model": (b'{"model":"x","prompt":"a"}', False, LookupError),
            "not object": (b'[1,2]', False, ValueError),
            "bad json": (b'{"model":', False, ValueError),
            "zero max_tokens": (b'{"model":"m","prompt":"a","max_tokens":0}', False, ValueError),
            "bool max_tokens": (b'{"model":"m","prompt":"a","max_tokens":true}', False, ValueError),
            "content not string": (b'{"model":"m","messages":[{"content":5}]}', True, ValueError),
            "prompt not string": (b'{"model":"m","prompt":[1]}', False, ValueError),
            "stream_options list": (b'{"model":"m","prompt":"a","stream_options":[1]}', False, ValueError),
        }
        for name, (body, chat, exc) in cases.items():
            with self.subTest(name):
                if exc is None:
                    text, mt, _, _ = srv.parse_request(body, "m", chat)
                    self.assertTrue(text)
                    self.assertGreater(mt, 0)
                else:
                    with self.assertRaises(exc):
                        srv.parse_request(body, "m", chat)

    def test_fuzz_never_raises_other_errors(self):
        rng = random.Random(7)
        seeds = [b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true,'
                 b'"stream_options":{"include_usage":true}}', b'{"model":"m","prompt":"x y","max_tokens":2}']
        for i in range(3000):
            b = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 6)):
                op = rng.random()
                j = rng.randrange(len(b) + 1)
                if op < 0.4 and b:
                    b[min(j, len(b) - 1)] = rng.randrange(256)
                elif op < 0.7:
                    b[j:j] = bytes([rng.randrange(256)])
                else:
                    del b[j:j + rng.randint(1, 4)]
            try:
                srv.parse_request(bytes(b), "m", i % 2 == 0)
            except (ValueError, LookupError):
                pass


class ServerTest(unittest.TestCase):
    def test_streams_concurrent_requests_with_vllm_framing(self):
        with tempfile.TemporaryDirectory() as tmp:
            m, cfg, d = tiny_model(tmp)
            sched = te.Scheduler(m, 4, 64)
            args = srv.parse_args(["--model", d, "--max-model-len", "64", "--max-num-seqs", "4"])
            httpd = srv.ThreadingHTTPServer(("127.0.0.1", 0), srv.make_handler(args, "tiny", sched, cfg["vocab_size"], 0, torch.__version__))
            t = threading.Thread(target=httpd.serve_forever)
            t.start()
            try:
                port = httpd.server_address[1]
                results = [None] * 4

                def one(i):
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    c.request("POST", "/v1/chat/completions", json.dumps({
                        "model": "tiny", "messages": [{"role": "user", "content": "w " * (3 + i)}], "max_tokens": 5,
                        "stream": True, "stream_options": {"include_usage": True}}))
                    r = c.getresponse()
                    results[i] = (r.status, r.read().decode())
                    c.close()
                ths = [threading.Thread(target=one, args=(i,)) for i in range(4)]
                for th in ths:
                    th.start()
                for th in ths:
                    th.join()
                for status, body in results:
                    self.assertEqual(status, 200)
                    events = [ln[6:] for ln in body.split("\n") if ln.startswith("data: ")]
                    self.assertEqual(events[-1], "[DONE]")
                    chunks = [json.loads(e) for e in events[:-1]]
                    self.assertEqual(chunks[0]["choices"][0]["delta"], {"role": "assistant", "content": ""})
                    self.assertEqual(sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")), 5)
                    self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 5)
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/metrics")
                self.assertIn('vllm:num_requests_waiting{model_name="tiny"} 0', c.getresponse().read().decode())
                c.request("POST", "/v1/completions", json.dumps({"model": "tiny", "prompt": "a " * 70, "max_tokens": 2}))
                r = c.getresponse()
                self.assertEqual(r.status, 400)
                self.assertIn("maximum context length is 64", r.read().decode())
                c.close()
            finally:
                httpd.shutdown()
                t.join()
                httpd.server_close()
                sched.close()

    def test_bad_flags_fail_with_the_fix(self):
        cases = {"relative model": (["--model", "models/x"], "not an absolute path"),
                 "zero seqs": (["--model", "/m", "--max-num-seqs", "0"], "--max-num-seqs 0 must be positive")}
        for name, (argv, want) in cases.items():
            with self.subTest(name):
                with self.assertRaises(SystemExit), _capture() as out:
                    srv.parse_args(argv)
                self.assertIn(want, out.getvalue())


class _capture:
    def __enter__(self):
        import io
        self.old, sys.stdout = sys.stdout, io.StringIO()
        return sys.stdout

    def __exit__(self, *a):
        sys.stdout = self.old


if __name__ == "__main__":
    unittest.main()
