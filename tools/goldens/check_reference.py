#!/usr/bin/env python3
"""Independent re-implementation of the four MoE architectures, checked against golden.json.

This does NOT use transformers' modeling code: it reads config.json and
model.safetensors the way a C++ loader would (per-expert tensor names, both the
old `rope_theta` / `torch_dtype` and the new `rope_parameters` / `dtype`
spellings, `num_experts` or `num_local_experts`) and runs a plain full-sequence
forward in float64 (or float32).  It is the executable form of the semantics
documented in README.md, and shows how close an independent implementation
gets to the goldens.

Usage:  python tools/goldens/check_reference.py [--dir tests/data/models] [--dtype float64|float32]
"""

import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, pos, theta):
    """x: [T, heads, hd]; rotate-half (GPT-NeoX) layout: pairs (i, i + hd/2)."""
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))  # float32, as HF
    freqs = pos.to(torch.float32)[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], -1)
    cos, sin = emb.cos().to(x.dtype)[:, None, :], emb.sin().to(x.dtype)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Model:
    def __init__(self, d, dtype):
        self.cfg = cfg = json.load(open(os.path.join(d, "config.json")))
        w = {}
        for fn in sorted(os.listdir(d)):
            if fn.endswith(".safetensors"):
                w.update({k: v.to(dtype) for k, v in load_file(os.path.join(d, fn)).items()})
        self.w = w
        self.arch = cfg["model_type"]
        self.D = cfg["hidden_size"]
        self.H = cfg["num_attention_heads"]
        self.KV = cfg.get("num_key_value_heads") or self.H
        self.hd = cfg.get("head_dim") or self.D // self.H
        self.L = cfg["num_hidden_layers"]
        self.eps = cfg["rms_norm_eps"]
        rp = cfg.get("rope_parameters") or {}
        self.theta = rp.get("rope_theta", cfg.get("rope_theta"))
        self.E = cfg.get("num_experts") or cfg.get("num_local_experts")
        self.k = cfg["num_experts_per_tok"]
        # Mixtral always renormalises the top-k weights; the others follow norm_topk_prob.
        self.norm_topk = True if self.arch == "mixtral" else bool(cfg.get("norm_topk_prob", False))
        self.window = None
        if self.arch == "mixtral":
            self.window = cfg.get("sliding_window")
        elif self.arch in ("qwen3_moe", "qwen2_moe") and cfg.get("use_sliding_window"):
            raise NotImplementedError("use_sliding_window=true")
        self.mlp_only = set(cfg.get("mlp_only_layers") or [])
        self.sparse_step = cfg.get("decoder_sparse_step", 1)
        self.clip = cfg.get("clip_qkv")
        self.tied = cfg.get("tie_word_embeddings", False)

    def lin(self, x, name):
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y if b is None else y + b

    def mlp(self, x, pre, names=("gate_proj", "up_proj", "down_proj")):
        g, u, dn = names
        return self.lin(torch.nn.functional.silu(self.lin(x, f"{pre}.{g}")) * self.lin(x, f"{pre}.{u}"), f"{pre}.{dn}")

    def attention(self, x, l, pos):
        p = f"model.layers.{l}.self_attn"
        T = x.shape[0]
        q, k, v = self.lin(x, p + ".q_proj"), self.lin(x, p + ".k_proj"), self.lin(x, p + ".v_proj")
        if self.arch == "olmoe":  # norm over the whole projection, before the split into heads
            q = rms_norm(q, self.w[p + ".q_norm.weight"], self.eps)
            k = rms_norm(k, self.w[p + ".k_norm.weight"], self.eps)
            if self.clip is not None:
                q, k, v = (t.clamp(-self.clip, self.clip) for t in (q, k, v))
        q, k, v = q.view(T, self.H, self.hd), k.view(T, self.KV, self.hd), v.view(T, self.KV, self.hd)
        if self.arch == "qwen3_moe":  # per-head norm over head_dim, before RoPE
            q = rms_norm(q, self.w[p + ".q_norm.weight"], self.eps)
            k = rms_norm(k, self.w[p + ".k_norm.weight"], self.eps)
        q, k = rope(q, pos, self.theta), rope(k, pos, self.theta)
        rep = self.H // self.KV
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # head h uses kv head h // rep
        s = torch.einsum("qhd,khd->hqk", q, k) * self.hd**-0.5
        qi, ki = pos[:, None], pos[None, :]
        allowed = ki <= qi
        if self.window is not None:
            allowed = allowed & (ki > qi - self.window)  # q - k < window: `window` keys including self
        s = s.masked_fill(~allowed[None], float("-inf"))
        a = torch.softmax(s, -1)
        o = torch.einsum("hqk,khd->qhd", a, v).reshape(T, self.H * self.hd)
        return self.lin(o, p + ".o_proj")

    def moe(self, x, l):
        if self.arch == "mixtral":
            pre = f"model.layers.{l}.block_sparse_moe"
            names = ("w1", "w3", "w2")
        else:
            pre = f"model.layers.{l}.mlp"
            names = ("gate_proj", "up_proj", "down_proj")
        logits = self.lin(x, pre + ".gate")  # [T, E]
        probs = torch.softmax(logits, -1)
        topv, topi = torch.topk(probs, self.k, -1)
        if self.norm_topk:
            topv = topv / topv.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for t in range(x.shape[0]):
            for j in range(self.k):
                e = int(topi[t, j])
                out[t] += topv[t, j] * self.mlp(x[t : t + 1], f"{pre}.experts.{e}", names)[0]
        if self.arch == "qwen2_moe":
            gate = torch.sigmoid(self.lin(x, pre + ".shared_expert_gate"))  # [T, 1]
            out = out + gate * self.mlp(x, pre + ".shared_expert")
        return out

    def forward(self, ids):
        ids = torch.tensor(ids)
        pos = torch.arange(len(ids))
        x = self.w["model.embed_tokens.weight"][ids]
        for l in range(self.L):
            p = f"model.layers.{l}"
            x = x + self.attention(rms_norm(x, self.w[p + ".input_layernorm.weight"], self.eps), l, pos)
            h = rms_norm(x, self.w[p + ".post_attention_layernorm.weight"], self.eps)
            dense = l in self.mlp_only or not (self.E and (l + 1) % self.sparse_step == 0)
            x = x + (self.mlp(h, p + ".mlp") if dense else self.moe(h, l))
        x = rms_norm(x, self.w["model.norm.weight"], self.eps)
        head = self.w["model.embed_tokens.weight"] if self.tied else self.w["lm_head.weight"]
        return x @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="tests/data/models")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(1)
    worst = 0.0
    for name in sorted(os.listdir(args.dir)):
        d = os.path.join(args.dir, name)
        if not os.path.isfile(os.path.join(d, "golden.json")):
            continue
        g = json.load(open(os.path.join(d, "golden.json")))
        m = Model(d, dtype)
        dp = dg = 0.0
        for i, p in enumerate(g["prompts"]):
            toks = g["greedy_tokens"][i]
            full = m.forward(p + toks)
            ref_p = torch.tensor(g["prompt_logits"][i], dtype=dtype)
            dp = max(dp, (full[: len(p)] - ref_p).abs().max().item())
            ref_g = torch.tensor(g["greedy_logits"][i], dtype=dtype)
            steps = ref_g.shape[0]
            mine = full[len(p) - 1 : len(p) - 1 + steps]
            dg = max(dg, (mine - ref_g).abs().max().item())
            argmax = full[len(p) - 1 : len(p) - 1 + len(toks)].argmax(-1).tolist()
            assert argmax == toks, f"{name} prompt {i}: greedy {argmax} != golden {toks}"
        print(f"{name:16s} max|diff| prompt_logits {dp:.3g}  greedy_logits {dg:.3g}  (greedy tokens match)")
        worst = max(worst, dp, dg)
    if worst > 1e-3:
        sys.exit(f"FAIL: max diff {worst}")
    print("OK")


if __name__ == "__main__":
    main()
