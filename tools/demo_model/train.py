#!/usr/bin/env python3
"""Trains moe-serve's default demo model from scratch: a small Qwen3-MoE that does
multi-digit addition and sorting in a chat format, so that its answers can be checked.

    python3 -m venv /tmp/demo && /tmp/demo/bin/pip install "jax[cpu]" tokenizers numpy
    /tmp/demo/bin/python tools/demo_model/train.py --out models/demo

The task (held-out problems are never trained on):
    user: "What is 12+345?"         assistant: "357"
    user: "Sort: 5 2 9 1"           assistant: "1 2 5 9"

Written in JAX: PyTorch has no wheel on the package index this project's machines reach,
JAX does. The forward is Hugging Face's Qwen3MoeForCausalLM written out (RMSNorm, q/k norm,
rotate-half RoPE, GQA, softmax top-k routing with normalized top-k weights, SiLU experts),
so the saved checkpoint is a Qwen3-MoE in HF layout, in bf16, that any Qwen3-MoE loader
reads. The CPU is enough (a few minutes); seeds are fixed. The tokenizer is byte-level BPE
with no merges (one token per byte) plus ChatML's special tokens; the chat template is
ChatML's. At the end it reports greedy accuracy on held-out problems, through the bf16
weights.
"""
import argparse
import json
import os
import random
import struct
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tokenizer_goldens"))
from make_vocabularies import bytes_to_unicode  # noqa: E402

CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "vocab_size": 259,
    "hidden_size": 128,
    "intermediate_size": 256,
    "moe_intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "hidden_act": "silu",
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 3,
    "output_router_logits": False,
    "router_aux_loss_coef": 0.001,
    "initializer_range": 0.02,
    "bos_token_id": None,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
}

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


# ---------------------------------------------------------------- the tokenizer

def tokenizer_json():
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in bytes_to_unicode().values():  # GPT-2's byte-level alphabet, in its order
        vocab[ch] = len(vocab)
    split = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
             "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, s in enumerate(specials)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


def tokenizer_config():
    return {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>", "add_bos_token": False, "add_eos_token": False,
            "model_max_length": 256, "chat_template": CHAT_TEMPLATE,
            "added_tokens_decoder": {str(i): {"content": s, "special": True, "lstrip": False, "rstrip": False,
                                              "normalized": False, "single_word": False}
                                     for i, s in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])}}


def chat_prompt(question):
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------- the task

def problem(rng):
    """(question, answer) of one random problem."""
    if rng.random() < 0.7:
        digits = rng.choice([1, 2, 3, 3, 3])
        a, b = rng.randrange(10 ** rng.choice([1, 2, 3])), rng.randrange(10 ** digits)
        if rng.random() < 0.5:
            a, b = b, a
        return f"What is {a}+{b}?", str(a + b)
    xs = [rng.randrange(10) for _ in range(rng.randint(2, 6))]
    return "Sort: " + " ".join(map(str, xs)), " ".join(map(str, sorted(xs)))


def held_out(n, seed=20261204):
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        q, a = problem(rng)
        if q not in seen:
            seen.add(q)
            out.append((q, a))
    return out


# ---------------------------------------------------------------- the model (HF Qwen3-MoE)

def init_params(key, c):
    d, hd, nh, nkv, e, fi = (c["hidden_size"], c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"],
                             c["num_experts"], c["moe_intermediate_size"])
    std = c["initializer_range"]
    keys = iter(jax.random.split(key, 8 + 16 * c["num_hidden_layers"]))
    normal = lambda shape, s=std: s * jax.random.normal(next(keys), shape, jnp.float32)
    p = {"embed": normal((c["vocab_size"], d)), "norm": jnp.ones(d), "lm_head": normal((c["vocab_size"], d)),
         "layers": []}
    for _ in range(c["num_hidden_layers"]):
        p["layers"].append({
            "input_norm": jnp.ones(d), "post_norm": jnp.ones(d),
            "q": normal((nh * hd, d)), "k": normal((nkv * hd, d)), "v": normal((nkv * hd, d)),
            "o": normal((d, nh * hd)), "q_norm": jnp.ones(hd), "k_norm": jnp.ones(hd),
            "gate": normal((e, d)),
            "w_gate": normal((e, fi, d)), "w_up": normal((e, fi, d)), "w_down": normal((e, d, fi)),
        })
    return p


def rms_norm(x, w, eps):
    x32 = x.astype(jnp.float32)
    return w * (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps))


def rope(x, positions, theta):
    """Rotate-half RoPE over the last axis of x [..., T, H, hd]."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    freqs = positions[:, None].astype(jnp.float32) * inv_freq[None, :]  # [T, hd/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [T, hd]
    cos, sin = jnp.cos(emb)[:, None, :], jnp.sin(emb)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def forward(p, tokens, c):
    """Logits [B, T, V] of token ids [B, T]."""
    B, T = tokens.shape
    nh, nkv, hd, k = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["num_experts_per_tok"]
    eps = c["rms_norm_eps"]
    positions = jnp.arange(T)
    mask = jnp.tril(jnp.ones((T, T), bool))
    x = p["embed"][tokens]
    for L in p["layers"]:
        h = rms_norm(x, L["input_norm"], eps)
        q = (h @ L["q"].T).reshape(B, T, nh, hd)
        kk = (h @ L["k"].T).reshape(B, T, nkv, hd)
        v = (h @ L["v"].T).reshape(B, T, nkv, hd)
        q = rope(rms_norm(q, L["q_norm"], eps), positions, c["rope_theta"])
        kk = rope(rms_norm(kk, L["k_norm"], eps), positions, c["rope_theta"])
        rep = nh // nkv
        kk, v = jnp.repeat(kk, rep, axis=2), jnp.repeat(v, rep, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, kk) / jnp.sqrt(hd).astype(jnp.float32)
        scores = jnp.where(mask[None, None], scores, -1e30)
        attn = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v).reshape(B, T, nh * hd)
        x = x + attn @ L["o"].T
        h = rms_norm(x, L["post_norm"], eps)
        probs = jax.nn.softmax(h @ L["gate"].T, axis=-1)  # [B, T, E]
        top_p, top_i = jax.lax.top_k(probs, k)
        top_p = top_p / jnp.sum(top_p, axis=-1, keepdims=True)  # norm_topk_prob
        weights = jnp.sum(jax.nn.one_hot(top_i, probs.shape[-1]) * top_p[..., None], axis=-2)  # [B, T, E]
        g = jnp.einsum("btd,efd->btef", h, L["w_gate"])
        u = jnp.einsum("btd,efd->btef", h, L["w_up"])
        y = jnp.einsum("btef,edf->bted", jax.nn.silu(g) * u, L["w_down"])
        x = x + jnp.einsum("bted,bte->btd", y, weights)
    return rms_norm(x, p["norm"], eps) @ p["lm_head"].T


# ---------------------------------------------------------------- data, training, evaluation

def encode_examples(tok, pairs, length):
    """Token ids [N, length] and a loss mask on the answer and its <|im_end|>."""
    ids = np.zeros((len(pairs), length), np.int32)
    mask = np.zeros((len(pairs), length), np.float32)
    for i, (q, a) in enumerate(pairs):
        prompt = tok.encode(chat_prompt(q), add_special_tokens=False).ids
        answer = tok.encode(a + "<|im_end|>", add_special_tokens=False).ids
        seq = (prompt + answer)[:length]
        ids[i, : len(seq)] = seq
        mask[i, len(prompt) - 1: len(seq) - 1] = 1.0  # positions that predict the answer
    return ids, mask


def adam(params, grads, state, step, lr, b1=0.9, b2=0.98, eps=1e-9, wd=0.01):
    m, v = state
    m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
    v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
    mh = jax.tree_util.tree_map(lambda m: m / (1 - b1 ** step), m)
    vh = jax.tree_util.tree_map(lambda v: v / (1 - b2 ** step), v)
    params = jax.tree_util.tree_map(lambda p, m, v: p - lr * (m / (jnp.sqrt(v) + eps) + wd * p), params, mh, vh)
    return params, (m, v)


def to_bf16(x):
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    x = np.asarray(x, np.float32)
    bits = x.view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def from_bf16(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def hf_tensors(p, c):
    """HF Qwen3-MoE names -> float32 arrays."""
    t = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["norm"], "lm_head.weight": p["lm_head"]}
    for i, L in enumerate(p["layers"]):
        pre = f"model.layers.{i}."
        t[pre + "input_layernorm.weight"] = L["input_norm"]
        t[pre + "post_attention_layernorm.weight"] = L["post_norm"]
        for name, key in [("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o")]:
            t[pre + f"self_attn.{name}.weight"] = L[key]
        t[pre + "self_attn.q_norm.weight"] = L["q_norm"]
        t[pre + "self_attn.k_norm.weight"] = L["k_norm"]
        t[pre + "mlp.gate.weight"] = L["gate"]
        for e in range(c["num_experts"]):
            t[pre + f"mlp.experts.{e}.gate_proj.weight"] = L["w_gate"][e]
            t[pre + f"mlp.experts.{e}.up_proj.weight"] = L["w_up"][e]
            t[pre + f"mlp.experts.{e}.down_proj.weight"] = L["w_down"][e]
    return {k: np.asarray(v, np.float32) for k, v in t.items()}


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = to_bf16(tensors[name]).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def bf16_params(p):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(from_bf16(to_bf16(x))), p)


def greedy_accuracy(p, tok, pairs, c, max_new=12):
    """Greedy answers of `pairs` (one batch, padded on the right) and the fraction right."""
    end = tok.token_to_id("<|im_end|>")
    prompts = [tok.encode(chat_prompt(q), add_special_tokens=False).ids for q, _ in pairs]
    length = max(map(len, prompts)) + max_new
    seqs = [list(pr) for pr in prompts]
    fwd = jax.jit(lambda p, x: forward(p, x, c))
    done = [False] * len(seqs)
    for _ in range(max_new):
        batch = np.zeros((len(seqs), length), np.int32)
        for i, s in enumerate(seqs):
            batch[i, : len(s)] = s
        logits = np.asarray(fwd(p, jnp.asarray(batch)))
        for i, s in enumerate(seqs):
            if done[i]:
                continue
            nxt = int(np.argmax(logits[i, len(s) - 1]))
            s.append(nxt)
            done[i] = nxt == end
    right = 0
    for (q, a), s, pr in zip(pairs, seqs, prompts):
        out = s[len(pr):]
        text = tok.decode([t for t in out if t != end])
        right += int(text == a and end in out)
    return right / len(pairs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval", type=int, default=200, help="held-out problems to report")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(), f, ensure_ascii=False)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(), f, ensure_ascii=False, indent=1)
    tok = Tokenizer.from_file(os.path.join(args.out, "tokenizer.json"))
    c = CONFIG

    held = held_out(1000)
    banned = {q for q, _ in held}
    rng = random.Random(args.seed)
    length = 48

    def batch():
        pairs = []
        while len(pairs) < args.batch:
            q, a = problem(rng)
            if q not in banned:
                pairs.append((q, a))
        return encode_examples(tok, pairs, length)

    def loss_fn(p, ids, mask):
        logits = forward(p, ids[:, :-1], c)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
        m = mask[:, :-1]
        return jnp.sum(nll * m) / jnp.sum(m)

    @jax.jit
    def train_step(p, state, step, ids, mask):
        loss, grads = jax.value_and_grad(loss_fn)(p, ids, mask)
        warm = jnp.minimum(1.0, step / 200.0)
        decay = 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(step / args.steps, 1.0)))
        p, state = adam(p, grads, state, step, args.lr * warm * (0.05 + 0.95 * decay))
        return p, state, loss

    params = init_params(jax.random.PRNGKey(args.seed), c)
    state = (jax.tree_util.tree_map(jnp.zeros_like, params), jax.tree_util.tree_map(jnp.zeros_like, params))
    start = time.time()
    for step in range(1, args.steps + 1):
        ids, mask = batch()
        params, state, loss = train_step(params, state, step, jnp.asarray(ids), jnp.asarray(mask))
        if step % 100 == 0 or step == 1:
            print(f"step {step}: loss {float(loss):.4f} ({time.time() - start:.0f} s)", flush=True)
        if step % 1000 == 0:
            print(f"  held-out greedy accuracy (f32): {greedy_accuracy(params, tok, held[:100], c):.3f}", flush=True)

    quantized = bf16_params(params)
    accuracy = greedy_accuracy(quantized, tok, held[: args.eval], c)
    print(f"held-out greedy accuracy through bf16 weights: {accuracy:.3f} on {args.eval} problems")
    save_safetensors(os.path.join(args.out, "model.safetensors"), hf_tensors(params, c))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [2], "pad_token_id": 0, "do_sample": False}, f, indent=1)
    with open(os.path.join(args.out, "held_out.jsonl"), "w") as f:
        for q, a in held[: args.eval]:
            f.write(json.dumps({"question": q, "answer": a}) + "\n")
    print(f"wrote {args.out} ({os.path.getsize(os.path.join(args.out, 'model.safetensors')) / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
