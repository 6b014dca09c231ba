"""A tiny random-weight Qwen3-MoE with the committed qwen2 test tokenizer and chat template,
made with moe-make-model, for the Python tests that run real binaries on it.

    sys.path.insert(0, os.path.join(SRC, "tests/support"))
    from tiny_model import make_model
    make_model(BIN, SRC, "/tmp/model")
"""
import os
import shutil
import subprocess


def make_model(bin_dir, source_dir, out):
    subprocess.run([os.path.join(bin_dir, "moe-make-model"),
                    "--config", os.path.join(source_dir, "tests/data/configs/qwen3-30b-a3b.json"),
                    "--layers", "2", "--hidden_size", "128", "--heads", "4", "--kv_heads", "2",
                    "--head_dim", "32", "--experts", "8", "--top_k", "2",
                    "--expert_intermediate_size", "64", "--vocab_size", "1554",
                    "--max_position_embeddings", "2048", "--init_std", "0.05", "--seed", "1",
                    "--out", out], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(source_dir, "tests/data/tokenizers/qwen2", name), out)
