#!/usr/bin/env python3
"""Writes tests/data/chat_templates/goldens.json: transformers' apply_chat_template output for
the Qwen3, Mixtral and OLMoE chat templates (tests/data/chat_templates/*.jinja) over several
conversations, with and without the generation prompt.

goldens.json: {"transformers_version": "...",
               "cases": [{"template": "qwen3", "name": "...", "messages": [...],
                          "add_generation_prompt": bool, "extra": {...kwargs...},
                          "bos_token": "...", "eos_token": "...",
                          "output": "..." | null, "error": "..." | null}]}
`error` holds the raise_exception message where the template refuses the conversation.

Usage: python tools/tokenizer_goldens/make_chat_goldens.py --dir tests/data
"""
import argparse
import json
import os

import transformers
from transformers import PreTrainedTokenizerFast

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Réponds en français."}
U1 = {"role": "user", "content": "Hello! What's 2+2?"}
A1 = {"role": "assistant", "content": "2 + 2 = 4."}
U2 = {"role": "user", "content": "And in 中文? 😀\nPlease answer briefly."}
A_THINK = {"role": "assistant", "content": "<think>\nThe user wants Chinese.\n</think>\n\n四。"}
A_REASON = {"role": "assistant", "content": "It is 4.", "reasoning_content": "Simple sum."}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
A_CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
A_CALL2 = {"role": "assistant", "content": "Checking.", "tool_calls": [
    {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]}
TOOL1 = {"role": "tool", "content": "{\"temp\": 21}"}
TOOL2 = {"role": "tool", "content": "<tool_response>x</tool_response>"}

COMMON = {
    "single_user": [U1],
    "system_user": [SYSTEM, U1],
    "multi_turn": [U1, A1, U2],
    "system_multi_turn": [SYSTEM, U1, A1, U2],
    "ends_with_assistant": [SYSTEM, U1, A1],
    "empty_content": [{"role": "user", "content": ""}],
}
QWEN3_ONLY = {
    "thinking_in_history": [U1, A_THINK, U2],
    "thinking_last": [U1, A_THINK],
    "reasoning_content": [U1, A_REASON, U2, A_REASON],
    "tool_calls": [SYSTEM, U1, A_CALL, TOOL1, TOOL2, A_CALL2, TOOL1],
    "system_later": [U1, SYSTEM, U2],
}
MIXTRAL_ERRORS = {
    "two_users": [U1, U2],
    "tool_role": [U1, TOOL1],
}
SPECIALS = {"qwen3": ("<|endoftext|>", "<|im_end|>"), "mixtral": ("<s>", "</s>"),
            "olmoe": ("<|endoftext|>", "<|endoftext|>")}
VOCAB = {"qwen3": "qwen2", "mixtral": "mistral", "olmoe": "gpt2"}


def render(tok, template, messages, add_generation_prompt, extra):
    try:
        out = tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                      add_generation_prompt=add_generation_prompt, **extra)
        return out, None
    except Exception as e:  # jinja2 TemplateError from raise_exception
        return None, str(e)


def cases_for(name, data_dir):
    with open(os.path.join(data_dir, "chat_templates", name + ".jinja")) as f:
        template = f.read()
    bos, eos = SPECIALS[name]
    tok = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(data_dir, "tokenizers", VOCAB[name], "tokenizer.json"),
        bos_token=bos, eos_token=eos)
    convs = dict(COMMON)
    extras = [{}]
    if name == "qwen3":
        convs.update(QWEN3_ONLY)
        extras = [{}, {"enable_thinking": False}, {"enable_thinking": True}]
    if name == "mixtral":
        convs.update(MIXTRAL_ERRORS)
    cases = []
    for conv_name, messages in convs.items():
        for extra in extras:
            if conv_name == "tool_calls":
                extra = dict(extra, tools=TOOLS)
            for gen in (False, True):
                out, err = render(tok, template, messages, gen, extra)
                cases.append({"template": name, "name": conv_name, "messages": messages,
                              "add_generation_prompt": gen, "extra": extra, "bos_token": bos,
                              "eos_token": eos, "output": out, "error": err})
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="tests/data")
    args = parser.parse_args()
    cases = []
    for name in ("qwen3", "mixtral", "olmoe"):
        cases += cases_for(name, args.dir)
    out = {"transformers_version": transformers.__version__, "cases": cases}
    path = os.path.join(args.dir, "chat_templates", "goldens.json")
    with open(path, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(len(cases), "cases,", sum(c["error"] is not None for c in cases), "errors ->", path)


if __name__ == "__main__":
    main()
