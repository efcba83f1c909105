#!/usr/bin/env python3
"""Baseline: llama.cpp (via llama-cpp-python low-level API) generation throughput.

For each batch size B, B independent sequences (same prompt) are prefilled in one
llama_decode call, then 64 new tokens per sequence are generated: each step samples
one token per sequence (llama_sampler_sample on that sequence's logits row) and
decodes all B new tokens in a single llama_decode call (llama_batch with B tokens,
one seq_id each). EOS is ignored so every sequence produces exactly --new-tokens.

Reported:
  prefill  tok/s = B*prompt_len / time(prefill decode + first sample)
  gen      tok/s = B*new_tokens / time(generation loop)   (excludes model load & prefill)
  e2e      tok/s = B*new_tokens / time(prefill + generation)

Usage: nice -n 10 python bench_llamacpp.py --model X.gguf [--batches 1,8,32] [--threads 2]
"""
import argparse
import ctypes
import statistics
import time

import llama_cpp as L

PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\nWrite a short story about a robot who learns to paint.<|im_end|>\n"
          "<|im_start|>assistant\n")


def tokenize(vocab, text):
    b = text.encode("utf-8")
    n_max = len(b) + 16
    buf = (L.llama_token * n_max)()
    n = L.llama_tokenize(vocab, b, len(b), buf, n_max, False, True)  # add_special=False, parse_special=True
    assert n > 0, n
    return list(buf[:n])


def make_sampler(mode, seed, temp, top_k):
    ch = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    if mode == "greedy":
        L.llama_sampler_chain_add(ch, L.llama_sampler_init_greedy())
    else:
        L.llama_sampler_chain_add(ch, L.llama_sampler_init_top_k(top_k))
        L.llama_sampler_chain_add(ch, L.llama_sampler_init_temp(temp))
        L.llama_sampler_chain_add(ch, L.llama_sampler_init_dist(seed))
    return ch


def fill(batch, entries):
    """entries: list of (token, pos, seq_id, want_logits)"""
    for i, (tok, pos, sid, lg) in enumerate(entries):
        batch.token[i] = tok
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = sid
        batch.logits[i] = 1 if lg else 0
    batch.n_tokens = len(entries)


def run_once(ctx, vocab, batch, prompt, B, new_tokens, mode, temp, top_k, seed):
    mem = L.llama_get_memory(ctx)
    L.llama_memory_clear(mem, True)
    samplers = [make_sampler(mode, seed + s, temp, top_k) for s in range(B)]
    P = len(prompt)
    # prefill: all B prompts in one llama_decode (llama.cpp splits into n_ubatch internally)
    entries = []
    for s in range(B):
        for j, t in enumerate(prompt):
            entries.append((t, j, s, j == P - 1))
    t0 = time.perf_counter()
    fill(batch, entries)
    rc = L.llama_decode(ctx, batch)
    assert rc == 0, f"prefill decode rc={rc}"
    # logits row index of each sequence's last prompt token within the batch
    idx = [s * P + P - 1 for s in range(B)]
    toks = [L.llama_sampler_sample(samplers[s], ctx, idx[s]) for s in range(B)]
    t1 = time.perf_counter()
    out = [[t] for t in toks]
    pos = P
    # generation: tokens 2..new_tokens need new_tokens-1 decodes; we also decode the last
    # sampled token (like llama-batched-bench, new_tokens decode steps of B tokens each).
    for step in range(new_tokens):
        fill(batch, [(toks[s], pos, s, True) for s in range(B)])
        rc = L.llama_decode(ctx, batch)
        assert rc == 0, f"gen decode rc={rc}"
        pos += 1
        if step < new_tokens - 1:
            toks = [L.llama_sampler_sample(samplers[s], ctx, s) for s in range(B)]
            for s in range(B):
                out[s].append(toks[s])
    t2 = time.perf_counter()
    for sm in samplers:
        L.llama_sampler_free(sm)
    return t1 - t0, t2 - t1, out


def detok(vocab, toks):
    buf = ctypes.create_string_buffer(256)
    s = b""
    for t in toks:
        n = L.llama_token_to_piece(vocab, t, buf, 256, 0, False)
        s += buf.raw[:n]
    return s.decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--modes", default="greedy,sample")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--n-batch", type=int, default=4096)
    ap.add_argument("--n-ubatch", type=int, default=512)
    ap.add_argument("--kv-unified", type=int, default=0)
    ap.add_argument("--flash-attn", type=int, default=-1, help="-1 auto, 0 off, 1 on")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--temp", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--show", action="store_true", help="print sequence 0 of the last run")
    a = ap.parse_args()
    batches = [int(x) for x in a.batches.split(",")]
    max_b = max(batches)

    L.llama_backend_init()
    global _log_cb
    _log_cb = L.llama_log_callback(lambda lvl, msg, ud: None)  # silence llama.cpp logs
    L.llama_log_set(_log_cb, None)
    print("llama-cpp-python", L.__version__)
    print(L.llama_print_system_info().decode().strip())
    mp = L.llama_model_default_params()
    tl = time.perf_counter()
    model = L.llama_model_load_from_file(a.model.encode(), mp)
    assert model
    cp = L.llama_context_default_params()
    cp.n_ctx = a.n_ctx
    cp.n_batch = a.n_batch
    cp.n_ubatch = a.n_ubatch
    cp.n_seq_max = max_b
    cp.n_threads = a.threads
    cp.n_threads_batch = a.threads
    cp.kv_unified = bool(a.kv_unified)
    cp.flash_attn_type = a.flash_attn
    ctx = L.llama_init_from_model(model, cp)
    assert ctx
    print(f"load {time.perf_counter() - tl:.2f}s  n_ctx={L.llama_n_ctx(ctx)} n_batch={a.n_batch} "
          f"n_ubatch={a.n_ubatch} n_seq_max={max_b} threads={a.threads} kv_unified={a.kv_unified} "
          f"flash_attn={a.flash_attn}")
    vocab = L.llama_model_get_vocab(model)
    prompt = tokenize(vocab, PROMPT)
    P = len(prompt)
    print(f"prompt_len={P} new_tokens={a.new_tokens} reps={a.reps} (median reported)")
    batch = L.llama_batch_init(max(a.n_batch, max_b * P, max_b), 0, 1)

    # warm-up
    run_once(ctx, vocab, batch, prompt, min(batches), 8, "greedy", a.temp, a.top_k, a.seed)

    print(f"{'mode':7s} {'B':>3s} {'prefill tok/s':>14s} {'gen tok/s':>10s} {'gen ms/step':>12s} {'e2e tok/s':>10s}")
    for mode in a.modes.split(","):
        for B in batches:
            pts, gts, out = [], [], None
            for r in range(a.reps):
                tp, tg, out = run_once(ctx, vocab, batch, prompt, B, a.new_tokens, mode,
                                       a.temp, a.top_k, a.seed + 1000 * r)
                pts.append(tp)
                gts.append(tg)
            tp, tg = statistics.median(pts), statistics.median(gts)
            e2e = statistics.median([p + g for p, g in zip(pts, gts)])
            print(f"{mode:7s} {B:3d} {B * P / tp:14.1f} {B * a.new_tokens / tg:10.1f} "
                  f"{1000 * tg / a.new_tokens:12.2f} {B * a.new_tokens / e2e:10.1f}", flush=True)
            if a.show:
                print("   seq0:", repr(detok(vocab, out[0])[:200]))
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)


if __name__ == "__main__":
    main()
