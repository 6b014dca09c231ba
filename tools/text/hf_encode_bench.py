#!/usr/bin/env python3
"""Hugging Face `tokenizers` encode throughput on one thread, for tools/text/tokenizer_bench.

Reads documents separated by U+001E from --corpus, encodes each (no special tokens) with
Tokenizer.encode in a loop, and prints one line of JSON:
  {"mb_per_s": ..., "seconds": ..., "tokens": ..., "ids_hash": ...}
ids_hash is FNV-1a (64-bit) over every id in order, so the C++ side can check it got the same ids.

Usage: RAYON_NUM_THREADS=1 python tools/text/hf_encode_bench.py --tokenizer DIR --corpus FILE
"""
import argparse
import json
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402


def fnv1a(ids_lists):
    h = 0xcbf29ce484222325
    for ids in ids_lists:
        for i in ids:
            h = ((h ^ (i & 0xFFFFFFFF)) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True, help="directory with tokenizer.json")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    with open(args.corpus, encoding="utf-8") as f:
        docs = f.read().split("\x1e")
    total_bytes = sum(len(d.encode("utf-8")) for d in docs)
    best = None
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = [tok.encode(d, add_special_tokens=False).ids for d in docs]
        seconds = time.perf_counter() - start
        best = seconds if best is None else min(best, seconds)
    print(json.dumps({"mb_per_s": total_bytes / 1e6 / best, "seconds": best,
                      "tokens": sum(len(x) for x in out), "ids_hash": fnv1a(out)}))


if __name__ == "__main__":
    main()
