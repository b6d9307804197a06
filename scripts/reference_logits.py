#!/usr/bin/env python3
"""Independent reference for dgq-model's LLaMA-family forward and GPT-2-style BPE tokenizer.

Reads a GGUF with the PyPI `gguf` package (its own dequantizers), tokenizes a prompt with a
naive byte-level BPE written here (no `tokenizers`/`transformers`), and runs the forward in
float64 numpy with llama.cpp's *interleaved* (adjacent-pair) RoPE applied to the weights exactly
as stored in the GGUF. dgq-model instead un-permutes Q/K to the Hugging Face layout and uses the
half-split rotary, so agreement checks the permutation handling too.

Writes a small JSON (token ids, per position: log-sum-exp, top-10 ids and logits, and the logits
of a fixed sample of vocabulary ids) that `crates/dgq-model/tests/smollm2.rs` compares against.

Setup (once): scripts/reference_logits.sh creates a venv with gguf, numpy and regex in the cache.
Usage: python reference_logits.py MODEL.gguf --prompt "..." --out ref.json
"""

import argparse
import json
import sys

import numpy as np
import regex
from gguf import GGUFReader
from gguf.quants import dequantize


def field_str(reader, key):
    f = reader.fields[key]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def field_num(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0].item()


def field_str_list(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def field_num_list(reader, key):
    f = reader.fields[key]
    return [int(f.parts[i][0]) for i in f.data]


# ---------------------------------------------------------------- tokenizer (naive BPE)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


GPT2_PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def pre_tokenize(text, pre):
    pieces = []
    if pre == "smollm":
        # SmolLM's tokenizer.json: Digits(individual_digits=True) then ByteLevel's GPT-2 regex.
        chunks = regex.split(r"(\p{N})", text)
    else:
        chunks = [text]
    for c in chunks:
        if c:
            pieces.extend(GPT2_PAT.findall(c))
    return pieces


def bpe_encode(text, tokens, merges, special, pre):
    vocab = {t: i for i, t in enumerate(tokens)}
    ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
    b2u = bytes_to_unicode()
    ids = []
    # Split out special (control) tokens first, as `tokenizers` does for added special tokens.
    if special:
        parts = regex.split("(" + "|".join(regex.escape(s) for s in special) + ")", text)
    else:
        parts = [text]
    for part in parts:
        if part in special:
            ids.append(vocab[part])
            continue
        for piece in pre_tokenize(part, pre):
            word = [b2u[b] for b in piece.encode("utf-8")]
            while len(word) > 1:
                best = None
                for i in range(len(word) - 1):
                    r = ranks.get((word[i], word[i + 1]))
                    if r is not None and (best is None or r < best[0]):
                        best = (r, i)
                if best is None:
                    break
                i = best[1]
                word = word[:i] + [word[i] + word[i + 1]] + word[i + 2 :]
            ids.extend(vocab[w] for w in word)
    return ids


# ---------------------------------------------------------------- model


def load(reader):
    arch = field_str(reader, "general.architecture")
    cfg = {
        "arch": arch,
        "n_layer": field_num(reader, f"{arch}.block_count"),
        "d": field_num(reader, f"{arch}.embedding_length"),
        "n_head": field_num(reader, f"{arch}.attention.head_count"),
        "n_kv": field_num(reader, f"{arch}.attention.head_count_kv"),
        "eps": field_num(reader, f"{arch}.attention.layer_norm_rms_epsilon"),
        "theta": field_num(reader, f"{arch}.rope.freq_base"),
    }
    w = {}
    for t in reader.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float64)
        # gguf lists dims fastest-first; numpy wants them slowest-first.
        w[t.name] = a.reshape([int(x) for x in reversed(t.shape)])
    return cfg, w


def rms_norm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope_interleaved(x, theta):
    """llama.cpp's 'normal' RoPE: rotate adjacent pairs (x[2i], x[2i+1]) by pos * theta^(-2i/d)."""
    t, h, hd = x.shape
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(t, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def forward(cfg, w, ids):
    t = len(ids)
    nh, nkv = cfg["n_head"], cfg["n_kv"]
    d = cfg["d"]
    hd = d // nh
    x = w["token_embd.weight"][ids]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(cfg["n_layer"]):
        p = f"blk.{i}."
        h = rms_norm(x, w[p + "attn_norm.weight"], cfg["eps"])
        q = (h @ w[p + "attn_q.weight"].T).reshape(t, nh, hd)
        k = (h @ w[p + "attn_k.weight"].T).reshape(t, nkv, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(t, nkv, hd)
        if cfg["arch"] == "llama":
            q, k = rope_interleaved(q, cfg["theta"]), rope_interleaved(k, cfg["theta"])
        else:
            sys.exit("only the llama arch (interleaved GGUF rope) is implemented here")
        rep = nh // nkv
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(t, d)
        x = x + o @ w[p + "attn_output.weight"].T
        h = rms_norm(x, w[p + "ffn_norm.weight"], cfg["eps"])
        g = h @ w[p + "ffn_gate.weight"].T
        u = h @ w[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "ffn_down.weight"].T
    x = rms_norm(x, w["output_norm.weight"], cfg["eps"])
    head = w.get("output.weight", w["token_embd.weight"])
    return x @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--prompt", action="append", required=True, help="first prompt is run through the model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sample-stride", type=int, default=997)
    args = ap.parse_args()

    reader = GGUFReader(args.gguf)
    tokens = field_str_list(reader, "tokenizer.ggml.tokens")
    types = field_num_list(reader, "tokenizer.ggml.token_type")
    merges = field_str_list(reader, "tokenizer.ggml.merges")
    pre = field_str(reader, "tokenizer.ggml.pre")
    special = [tok for tok, ty in zip(tokens, types) if ty == 3]
    encodings = {p: bpe_encode(p, tokens, merges, special, pre) for p in args.prompt}

    cfg, w = load(reader)
    ids = encodings[args.prompt[0]]
    logits = forward(cfg, w, ids)
    sample = list(range(0, logits.shape[1], args.sample_stride))
    positions = []
    for row in logits:
        top = np.argsort(-row)[:10]
        m = row.max()
        positions.append(
            {
                "logsumexp": float(m + np.log(np.exp(row - m).sum())),
                "top_ids": [int(j) for j in top],
                "top_logits": [float(row[j]) for j in top],
                "sample_logits": [float(row[j]) for j in sample],
            }
        )
    out = {
        "model": args.gguf.rsplit("/", 1)[-1],
        "encodings": [{"text": p, "ids": e} for p, e in encodings.items()],
        "tokens": ids,
        "sample_ids": sample,
        "positions": positions,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"tokens {ids}")
    print("top-1 per position", [p["top_ids"][0] for p in positions])


if __name__ == "__main__":
    main()
