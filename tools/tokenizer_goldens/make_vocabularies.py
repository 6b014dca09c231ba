#!/usr/bin/env python3
"""Makes the tokenizer.json + tokenizer_config.json test vocabularies in tests/data/tokenizers/.

Model hubs cannot be reached, so the vocabularies come from two places:
  * real vocabularies shipped inside PyPI packages:
      gpt2     GPT-2's 50k byte-level BPE ranks from `openai-whisper`
               (whisper/assets/gpt2.tiktoken), laid out as GPT-2's own tokenizer.json
               (ByteLevel pre-tokenizer with the GPT-2 regex).
      mistral  Mistral-7B / Mixtral-8x7B's 32k SentencePiece BPE from `mistral-common`
               (mistral_common/data/tokenizer.model.v1), converted the way transformers'
               LlamaConverter does (legacy: Prepend + Replace normalizer, byte fallback).
  * small vocabularies trained here with the `tokenizers` package on a deterministic corpus, with
    the exact pre-tokenizer settings of the models we serve:
      qwen2    NFC + Split(Qwen2 regex, isolated) + ByteLevel(use_regex=false), Qwen special tokens.
      llama3   Split(Llama-3 regex, isolated) + ByteLevel(use_regex=false), ignore_merges.
      metaspace  SentencePiece-style BPE with a Metaspace pre-tokenizer (prepend_scheme "first")
               and byte fallback, as transformers writes non-legacy Llama/Mistral tokenizers.

Usage (from the repository root, in a venv with tokenizers, transformers, sentencepiece, protobuf,
mistral-common, openai-whisper --no-deps, tiktoken); the chat templates of
tests/data/chat_templates/ are copied into the configs of qwen2, mistral and gpt2:
  python tools/tokenizer_goldens/make_vocabularies.py --out tests/data/tokenizers
"""
import argparse
import base64
import json
import os
import random

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
                 r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Words for the training corpus: several scripts, code, numbers and emoji.
WORDS = """the of and to in is was that for it with as his on be at by had are but from or have an
they which one you were her all she there would their we him been has when who will more no if out
so said what up its about into than them can only other new some could time these two may then do
first any my now such like our over man me even most made after also did many before must through
don't we'll they're I've you'd it's She'S WE'RE Don'T ſtraße naïve café résumé coöperate
der die und sein nicht mit ich auf für über größer Straße le la les des est une pour dans être
это как так все она они мы его что был ты год можно время человек жизнь
的 一 是 不 了 人 我 在 有 他 这 为 之 大 来 以 个 中 上 们 到 说 国 和 地 也 子 时 道 出 而 要 于
日本語 ひらがな カタカナ 東京 漢字 한국어 안녕하세요 감사합니다
العربية مرحبا كتاب שלום עברית ספר हिन्दी नमस्ते ภาษาไทย
def return import self None True False lambda for( ){ }; => != == <= >= += -> :: // /* */ #include
0 1 2 3 42 100 2024 3.14159 1,000,000 0x1F 1e-9 ½ ² ٣ ४
🙂 😀 👍 🚀 🎉 ❤️ 👨‍👩‍👧 🇫🇷 ✨ 🤖 …  — – « » “ ” ‘ ’ • © ™ € £ ¥""".split()


def training_corpus(seed=1234, lines=4000):
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        n = rng.randint(3, 25)
        words = [rng.choice(WORDS) for _ in range(n)]
        seps = [rng.choice([" ", " ", " ", " ", "  ", "\n", "\t", ", ", ". "]) for _ in range(n)]
        out.append("".join(w + s for w, s in zip(words, seps)))
    return out


TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data",
                            "chat_templates")
# Which chat template each test vocabulary carries in its tokenizer_config.json.
CHAT_TEMPLATES = {"qwen2": "qwen3", "mistral": "mixtral", "gpt2": "olmoe"}


def write(out_dir, name, tokenizer, config):
    if name in CHAT_TEMPLATES:
        with open(os.path.join(TEMPLATE_DIR, CHAT_TEMPLATES[name] + ".jinja")) as f:
            config["chat_template"] = f.read()
    path = os.path.join(out_dir, name)
    os.makedirs(path, exist_ok=True)
    tokenizer.save(os.path.join(path, "tokenizer.json"), pretty=False)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def make_gpt2(out_dir):
    # whisper/__init__ imports torch; find the asset without importing the package.
    import importlib.util
    spec = importlib.util.find_spec("whisper")
    path = os.path.join(os.path.dirname(spec.origin), "assets", "gpt2.tiktoken")
    ranks = {}
    with open(path) as f:
        for line in f:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    enc = bytes_to_unicode()

    def to_str(b):
        return "".join(enc[x] for x in b)

    # Recover the merges from the ranks (as transformers' TikTokenConverter does).
    merges = []
    for token, rank in ranks.items():
        local = [(token[:i], token[i:], rank) for i in range(1, len(token))
                 if token[:i] in ranks and token[i:] in ranks]
        local.sort(key=lambda x: (ranks[x[0]], ranks[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2])
    vocab = {to_str(t): r for t, r in ranks.items()}
    tok = Tokenizer(models.BPE(vocab, [(to_str(a), to_str(b)) for a, b, _ in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([tokenizers.AddedToken("<|endoftext|>", normalized=False, special=True)])
    assert tok.token_to_id("<|endoftext|>") == 50256
    config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
              "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
              "add_bos_token": False, "add_eos_token": False, "model_max_length": 1024}
    write(out_dir, "gpt2", tok, config)


def make_mistral(out_dir):
    import mistral_common
    from transformers.convert_slow_tokenizer import generate_merges, import_protobuf
    path = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
    proto = import_protobuf().ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    # As LlamaConverter: ids 0..2 are <unk> <s> </s>, merges ordered by piece score.
    scores = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)]
    scores += [(p.piece, p.score) for p in proto.pieces[3:]]
    vocab = {w: i for i, (w, _) in enumerate(scores)}
    merges = generate_merges(vocab, scores)
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.add_special_tokens([tokenizers.AddedToken(t, normalized=False, special=True)
                            for t in ("<unk>", "<s>", "</s>")])
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(content=" ", left=1, right=0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
              "legacy": True, "model_max_length": 32768}
    write(out_dir, "mistral", tok, config)


def train_byte_level(pattern, specials, vocab_size, ignore_merges):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    return tok


def make_qwen2(out_dir):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = train_byte_level(QWEN2_PATTERN, specials, 3000, ignore_merges=False)
    tok.normalizer = normalizers.NFC()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # Qwen3 marks its reasoning tags as added tokens that are not special.
    tok.add_tokens([tokenizers.AddedToken(t, normalized=False, special=False)
                    for t in ("<think>", "</think>", "<tool_call>", "</tool_call>")])
    config = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "add_bos_token": False, "add_eos_token": False,
              "model_max_length": 131072}
    write(out_dir, "qwen2", tok, config)


def make_llama3(out_dir):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"]
    tok = train_byte_level(LLAMA3_PATTERN, specials, 3000, ignore_merges=True)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", 0)])])
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
              "eos_token": "<|eot_id|>", "model_max_length": 131072}
    write(out_dir, "llama3", tok, config)


def make_metaspace(out_dir):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                 split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(content=" ", left=1, right=0)])
    byte_tokens = ["<0x%02X>" % b for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=1500, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens)
    tok.train_from_iterator(training_corpus(seed=99), trainer=trainer)
    # Byte tokens are ordinary vocabulary entries in SentencePiece models, not added tokens.
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"]
                            if t["content"] in ("<unk>", "<s>", "</s>")]
    tok = Tokenizer.from_str(json.dumps(data))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B", special_tokens=[("<s>", 1), ("</s>", 2)])
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": True,
              "legacy": False, "model_max_length": 4096}
    write(out_dir, "metaspace", tok, config)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/data/tokenizers")
    args = parser.parse_args()
    for make in (make_gpt2, make_mistral, make_qwen2, make_llama3, make_metaspace):
        make(args.out)
        print("made", make.__name__[5:])


if __name__ == "__main__":
    main()
