#!/usr/bin/env python3
"""An independent Python client of moe.v1.Generation for the server tests.

Generates its stubs at run time from proto/moe/v1/generation.proto (protoc with gRPC's
Python plugin, into a temporary directory), streams one Generate call and writes what came
back as JSON: {"tokens": [...], "text": "...", "reason": "FINISH_REASON_...", ...}.

    python_client.py --address 127.0.0.1:50051 --proto_dir proto --protoc protoc \
        --grpc_plugin grpc_python_plugin --prompt 1,2,3 --max_tokens 16 --seed 7 --out r.json
"""
import argparse
import json
import subprocess
import sys
import tempfile


def generate_stubs(args, out_dir):
    subprocess.run([args.protoc, f"--proto_path={args.proto_dir}", f"--python_out={out_dir}",
                    f"--grpc_out={out_dir}", f"--plugin=protoc-gen-grpc={args.grpc_plugin}",
                    "moe/v1/generation.proto"], check=True)
    sys.path.insert(0, out_dir)


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--address", "--proto_dir", "--protoc", "--grpc_plugin", "--prompt", "--out"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--max_tokens", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as stubs:
        generate_stubs(args, stubs)
        import grpc
        from moe.v1 import generation_pb2 as pb
        from moe.v1 import generation_pb2_grpc as pb_grpc

        request = pb.GenerateRequest(
            token_ids=pb.TokenIds(ids=[int(t) for t in args.prompt.split(",")]),
            sampling=pb.SamplingParams(temperature=args.temperature, top_p=args.top_p,
                                       top_k=args.top_k, seed=args.seed),
            stopping=pb.StoppingParams(max_tokens=args.max_tokens, ignore_eos=True))
        result = {"tokens": [], "text": ""}
        with grpc.insecure_channel(args.address) as channel:
            stub = pb_grpc.GenerationStub(channel)
            for response in stub.Generate(request, timeout=60):
                if response.HasField("final"):
                    result["reason"] = pb.FinishReason.Name(response.final.reason)
                    result["completion_tokens"] = response.final.usage.completion_tokens
                else:
                    result["tokens"].extend(response.chunk.token_ids)
                    result["text"] += response.chunk.text
        with open(args.out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
