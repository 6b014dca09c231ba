#!/usr/bin/env python3
"""Writes goldens.json beside each tokenizer.json in tests/data/tokenizers/: what Hugging Face
`tokenizers` gives for the hard-string corpus (corpus.py).

goldens.json:
  {"tokenizers_version": "...",
   "lossless": bool,            # decode(encode(s)) == s for text without special-token strings
   "encode": [{"text", "ids" (add_special_tokens=True), "ids_plain" (False),
               "decoded" (decode(ids_plain)), "decoded_skip" (decode(ids, skip_special_tokens))}],
   "decode": [{"ids", "text", "text_skip"}],   # arbitrary id runs, split multi-byte characters
   "invalid_utf8": ["hex", ...]}               # must be rejected with an error

Usage: python tools/tokenizer_goldens/make_goldens.py --dir tests/data/tokenizers
"""
import argparse
import json
import os
import random
import sys

import tokenizers
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corpus import SPECIALS_IN_TEXT, hard_strings, invalid_utf8  # noqa: E402

LOSSLESS = {"gpt2": True, "llama3": True, "mistral": False, "qwen2": False, "metaspace": False}


def encode_cases(tok):
    cases = []
    for text in hard_strings():
        ids = tok.encode(text, add_special_tokens=True).ids
        plain = tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "ids_plain": plain,
                      "decoded": tok.decode(plain, skip_special_tokens=False),
                      "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    return cases


def decode_cases(tok, seed=3):
    rng = random.Random(seed)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    runs = [[i] for i in range(min(vocab_size, 300))]  # every low id alone: bytes, specials
    for _ in range(200):
        runs.append([rng.randrange(vocab_size) for _ in range(rng.randint(1, 12))])
    # Prefixes of encodings of multi-byte text end inside characters.
    for text in ["😀👨‍👩‍👧 中文", "é\u0301🇫🇷", "\U0010fffd\U00020000"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        runs += [ids[:n] for n in range(1, len(ids) + 1)]
        runs += [ids[n:] for n in range(1, len(ids))]
    return [{"ids": r, "text": tok.decode(r, skip_special_tokens=False),
             "text_skip": tok.decode(r, skip_special_tokens=True)} for r in runs]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="tests/data/tokenizers")
    args = parser.parse_args()
    for name in sorted(os.listdir(args.dir)):
        path = os.path.join(args.dir, name, "tokenizer.json")
        if not os.path.exists(path):
            continue
        tok = Tokenizer.from_file(path)
        cases = encode_cases(tok)
        if LOSSLESS[name]:
            for c in cases:
                if not any(s in c["text"] for s in SPECIALS_IN_TEXT):
                    assert c["decoded"] == c["text"], (name, c["text"])
        goldens = {"tokenizers_version": tokenizers.__version__, "lossless": LOSSLESS[name],
                   "encode": cases, "decode": decode_cases(tok),
                   "invalid_utf8": [b.hex() for b in invalid_utf8()]}
        with open(os.path.join(args.dir, name, "goldens.json"), "w") as f:
            json.dump(goldens, f, ensure_ascii=True, separators=(",", ":"))
            f.write("\n")
        print(name, len(cases), "encode cases,", len(goldens["decode"]), "decode cases")


if __name__ == "__main__":
    main()
