#!/usr/bin/env bash
# Sets up llama.cpp as bench-cpu's peer, outside the repository: builds `llama-bench` (CPU,
# Release) from the llama.cpp that PyPI's llama-cpp-python sdist vendors, and converts a
# model directory of ours to a bf16 GGUF with that llama.cpp's convert_hf_to_gguf.py.
#
#   tools/llama_cpp_peer/setup.sh --model /tmp/q4 [--dir /tmp/llama-peer] [--tokenizer qwen2]
#
# Our random models carry no tokenizer; the committed test tokenizer (tests/data/tokenizers/
# <name>) goes with the copy the converter reads. The converter names a pre-tokenizer by a
# hash of how it encodes a fixed text and knows only published models' hashes, so a local
# copy of it is patched to map our tokenizer's hash to the pre-tokenizer it names
# (--pre, qwen2 by default). Prints the llama-bench and GGUF paths at the end.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
model="" dir=/tmp/llama-peer tokenizer=qwen2 pre=qwen2 version=0.3.36
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --tokenizer) tokenizer="$2"; shift 2 ;;
    --pre) pre="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ -n "$model" && -f "$model/config.json" ]] || { echo "--model must name a model directory" >&2; exit 2; }
mkdir -p "$dir"
cd "$dir"

# 1. llama.cpp's sources, from the sdist.
if [[ ! -d src ]]; then
  python3 -m pip download --no-deps --no-binary :all: -d dl "llama-cpp-python==$version"
  tar -xzf "dl/llama_cpp_python-$version.tar.gz"
  mv "llama_cpp_python-$version/vendor/llama.cpp" src
  rm -rf "llama_cpp_python-$version"
fi

# 2. llama-bench alone, for this CPU.
if [[ ! -x build/bin/llama-bench ]]; then
  cmake -S src -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_CUDA=OFF >/dev/null
  cmake --build build --target llama-bench -j"$(nproc)"
fi

# 3. The converter's Python: CPU torch without its CUDA dependencies, and the vendored gguf.
if [[ ! -x venv/bin/python ]]; then
  python3 -m venv venv
  venv/bin/pip install -q torch  # PyPI's wheel: it imports only with its CUDA libraries
  venv/bin/pip install -q filelock typing-extensions sympy networkx jinja2 fsspec \
    numpy sentencepiece safetensors "transformers>=4.57,<5" "protobuf<5" ./src/gguf-py
fi

# 4. The converter, patched: an unknown hash maps to --pre.
if [[ ! -f convert/convert_hf_to_gguf.py ]]; then
  mkdir -p convert
  cp -r src/convert_hf_to_gguf.py src/conversion convert/
  python3 - convert/conversion/base.py <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
marker = "        res = None\n"
at = text.index(marker, text.index("def get_vocab_base_pre"))
text = text[:at] + '        res = os.environ.get("MOE_PEER_PRE")  # moe-serve: our test tokenizer\n' + text[at + len(marker):]
open(path, "w").write(text)
PY
fi

# 5. The GGUF: the model's files with the tokenizer beside them.
name="$(basename "$model")"
gguf="$dir/$name-bf16.gguf"
if [[ ! -f "$gguf" ]]; then
  staged="$dir/staged-$name"
  rm -rf "$staged" && mkdir -p "$staged"
  ln -s "$(cd "$model" && pwd)"/* "$staged/"
  cp "$repo/tests/data/tokenizers/$tokenizer"/tokenizer*.json "$staged/"
  MOE_PEER_PRE="$pre" venv/bin/python convert/convert_hf_to_gguf.py "$staged" --outtype bf16 --outfile "$gguf"
fi

echo "llama-bench: $dir/build/bin/llama-bench"
echo "gguf: $gguf"
