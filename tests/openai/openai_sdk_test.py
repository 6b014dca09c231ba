#!/usr/bin/env python3
"""moe-server's OpenAI API driven by the clients people use: the official `openai` SDK,
LangChain's ChatOpenAI, curl, and plain HTTP for the bad requests; gRPC (stubs generated at
run time) for the seeded cross-check. Runs the real server on a small random-weight
Qwen3-MoE with the committed qwen2 test tokenizer and its chat template.

Run by ctest (openai.sdk) with the venv scripts/test makes (openai, langchain-openai,
jsonschema from PyPI; grpcio and protobuf from Debian). Environment: MOE_BIN_DIR,
MOE_SOURCE_DIR, MOE_PROTOC, MOE_GRPC_PYTHON_PLUGIN.
"""
import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import openai

BIN = os.environ["MOE_BIN_DIR"]
SRC = os.environ["MOE_SOURCE_DIR"]
KEY = "test-key-5a1f"
MODEL = "tiny-qwen3"
sys.path.insert(0, os.path.join(SRC, "tools"))
import openai_spec_check  # noqa: E402
sys.path.insert(0, os.path.join(SRC, "tests/support"))
import tiny_model  # noqa: E402


def make_model(out):
    tiny_model.make_model(BIN, SRC, out)


class Server:
    """moe-server on free ports; stopped (SIGTERM) at the end."""

    def __init__(self, model_dir, *args):
        self.log = tempfile.NamedTemporaryFile(prefix="moe_openai_test.", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "moe-server"), "--model", model_dir, "--served_model_name", MODEL,
             "--port", "0", "--http_port", "0", "--kv_blocks", "1024", *args],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        out = ""
        deadline = time.time() + 60
        while "moe-server: serving" not in out:
            line = self.proc.stdout.readline()
            if not line or time.time() > deadline:
                raise RuntimeError(f"moe-server did not start: {out}\n{open(self.log.name).read()}")
            out += line
        m = re.search(r"listening on [^:]+:(\d+) \(gRPC\), metrics on \S+, HTTP on [^:]+:(\d+)", out)
        self.grpc_port, self.http_port = int(m.group(1)), int(m.group(2))
        self.base_url = f"http://127.0.0.1:{self.http_port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def http(server, method, path, body=None, key=KEY, raw=None):
    """(status, parsed JSON or text) of one plain HTTP call."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(server.base_url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def grpc_stubs(out_dir):
    subprocess.run([os.environ["MOE_PROTOC"], f"--proto_path={os.path.join(SRC, 'proto')}",
                    f"--python_out={out_dir}", f"--grpc_out={out_dir}",
                    f"--plugin=protoc-gen-grpc={os.environ['MOE_GRPC_PYTHON_PLUGIN']}",
                    "moe/v1/generation.proto"], check=True)
    sys.path.insert(0, out_dir)
    from moe.v1 import generation_pb2, generation_pb2_grpc
    return generation_pb2, generation_pb2_grpc


def metric(server, name):
    status, text = http(server, "GET", "/metrics", key=None)
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


class OpenAiSdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        model_dir = os.path.join(cls.tmp.name, "model")
        make_model(model_dir)
        cls.server = Server(model_dir, "--api_key", KEY)
        cls.client = openai.OpenAI(base_url=cls.server.base_url + "/v1", api_key=KEY, max_retries=0)
        cls.messages = [{"role": "system", "content": "You are brief."},
                        {"role": "user", "content": "Say hello."}]

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.tmp.cleanup()

    def assertStillServing(self):
        r = self.client.completions.create(model=MODEL, prompt="ok", max_tokens=1)
        self.assertEqual(len(r.choices), 1)

    # ------------------------------------------------------------ the SDK

    def test_models_lists_the_served_model(self):
        self.assertEqual([m.id for m in self.client.models.list()], [MODEL])
        self.assertEqual(self.client.models.retrieve(MODEL).id, MODEL)

    def test_completion(self):
        r = self.client.completions.create(model=MODEL, prompt="Hello there", max_tokens=6, seed=3,
                                           extra_body={"ignore_eos": True})
        self.assertEqual(r.object, "text_completion")
        self.assertEqual(r.model, MODEL)
        self.assertTrue(r.id.startswith("cmpl-"))
        self.assertEqual(len(r.choices), 1)
        self.assertEqual(r.choices[0].index, 0)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertIsInstance(r.choices[0].text, str)
        self.assertEqual(r.usage.completion_tokens, 6)
        self.assertGreater(r.usage.prompt_tokens, 0)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + 6)
        self.assertGreaterEqual(r.usage.prompt_tokens_details.cached_tokens, 0)

    def test_completion_with_a_list_of_prompts_numbers_choices_per_prompt(self):
        r = self.client.completions.create(model=MODEL, prompt=["Hello", [5, 6, 7]], n=2, max_tokens=3,
                                           extra_body={"ignore_eos": True})
        self.assertEqual([c.index for c in r.choices], [0, 1, 2, 3])
        self.assertEqual(r.usage.completion_tokens, 12)

    def test_chat_completion(self):
        r = self.client.chat.completions.create(model=MODEL, messages=self.messages, max_tokens=5,
                                                extra_body={"ignore_eos": True})
        self.assertEqual(r.object, "chat.completion")
        self.assertTrue(r.id.startswith("chatcmpl-"))
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertIsInstance(r.choices[0].message.content, str)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 5)

    def test_streaming_chat_with_include_usage(self):
        kwargs = dict(model=MODEL, messages=self.messages, max_tokens=6, seed=11, temperature=0.9,
                      extra_body={"ignore_eos": True})
        whole = self.client.chat.completions.create(**kwargs)
        chunks = list(self.client.chat.completions.create(**kwargs, stream=True,
                                                          stream_options={"include_usage": True}))
        self.assertGreater(len(chunks), 2)
        for c in chunks[:-1]:
            self.assertIsNone(c.usage)
            self.assertEqual(c.object, "chat.completion.chunk")
        last = chunks[-1]
        self.assertEqual(last.choices, [])
        self.assertEqual(last.usage.completion_tokens, 6)
        self.assertEqual(last.usage.prompt_tokens, whole.usage.prompt_tokens)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, whole.choices[0].message.content)  # the same seed, the same tokens
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finishes, ["length"])

    def test_streaming_with_two_choices_carries_each_index(self):
        stream = self.client.chat.completions.create(model=MODEL, messages=self.messages, max_tokens=5, n=2,
                                                     stream=True, logprobs=True,
                                                     extra_body={"ignore_eos": True})
        tokens = {0: 0, 1: 0}
        finished = {0: 0, 1: 0}
        for chunk in stream:
            for choice in chunk.choices:
                self.assertIn(choice.index, (0, 1))
                if choice.logprobs is not None and choice.logprobs.content:
                    tokens[choice.index] += len(choice.logprobs.content)
                if choice.finish_reason is not None:
                    finished[choice.index] += 1
        self.assertEqual(tokens, {0: 5, 1: 5})
        self.assertEqual(finished, {0: 1, 1: 1})

    def test_completions_logprobs(self):
        r = self.client.completions.create(model=MODEL, prompt="The sky", max_tokens=5, logprobs=2, seed=7,
                                           extra_body={"ignore_eos": True})
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 5)
        self.assertEqual(len(lp.token_logprobs), 5)
        self.assertEqual(len(lp.top_logprobs), 5)
        self.assertEqual(len(lp.text_offset), 5)
        self.assertEqual(lp.text_offset[0], 0)
        for i in range(5):
            self.assertLessEqual(lp.token_logprobs[i], 0.0)
            # Keyed by text: top tokens with the same text (for instance two pieces of one
            # character, each alone U+FFFD) share a key, as in OpenAI's and vLLM's answers.
            self.assertIn(len(lp.top_logprobs[i]), (1, 2))
            self.assertGreaterEqual(max(lp.top_logprobs[i].values()), lp.token_logprobs[i] - 1e-6)
            if i > 0:
                self.assertEqual(lp.text_offset[i], lp.text_offset[i - 1] + len(lp.tokens[i - 1].encode()))

    def test_chat_logprobs(self):
        r = self.client.chat.completions.create(model=MODEL, messages=self.messages, max_tokens=4,
                                                logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), 4)
        for t in content:
            self.assertLessEqual(t.logprob, 0.0)
            self.assertEqual(bytes(t.bytes).decode("utf-8", "replace"), t.token)
            self.assertEqual(len(t.top_logprobs), 3)
            probs = [x.logprob for x in t.top_logprobs]
            self.assertEqual(probs, sorted(probs, reverse=True))
            self.assertGreaterEqual(probs[0], t.logprob - 1e-6)

    def test_confidence_is_the_mean_and_min_of_the_returned_logprobs(self):
        r = self.client.completions.create(model=MODEL, prompt="Once", max_tokens=8, logprobs=0, n=2,
                                           extra_body={"ignore_eos": True})
        for choice in r.choices:
            lps = choice.logprobs.token_logprobs
            confidence = choice.model_extra["confidence"]
            self.assertEqual(confidence["tokens"], 8)
            self.assertAlmostEqual(confidence["mean_logprob"], sum(lps) / len(lps), places=5)
            self.assertAlmostEqual(confidence["min_logprob"], min(lps), places=6)
        chat = self.client.chat.completions.create(model=MODEL, messages=self.messages, max_tokens=5,
                                                   logprobs=True, extra_body={"ignore_eos": True})
        lps = [t.logprob for t in chat.choices[0].logprobs.content]
        confidence = chat.choices[0].model_extra["confidence"]
        self.assertAlmostEqual(confidence["mean_logprob"], sum(lps) / len(lps), places=5)
        self.assertAlmostEqual(confidence["min_logprob"], min(lps), places=6)
        # Always on: without logprobs asked for, and at the end of a stream.
        plain = self.client.completions.create(model=MODEL, prompt="Once", max_tokens=3)
        self.assertLess(plain.choices[0].model_extra["confidence"]["mean_logprob"], 0.0)
        chunks = list(self.client.chat.completions.create(model=MODEL, messages=self.messages, max_tokens=3,
                                                          stream=True))
        ends = [c.choices[0].model_extra.get("confidence") for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(len(ends), 1)
        self.assertLess(ends[0]["min_logprob"], 0.0)

    def test_a_seed_gives_the_same_tokens_over_http_and_grpc_whatever_else_runs(self):
        prompt = [17, 230, 411, 9]
        params = dict(temperature=0.8, top_p=0.95, seed=1234)
        with tempfile.TemporaryDirectory() as stubs:
            import grpc
            pb, pb_grpc = grpc_stubs(stubs)
            request = pb.GenerateRequest(
                token_ids=pb.TokenIds(ids=prompt),
                sampling=pb.SamplingParams(temperature=params["temperature"], top_p=params["top_p"],
                                           seed=params["seed"]),
                stopping=pb.StoppingParams(max_tokens=16, ignore_eos=True),
                output=pb.OutputOptions(logprobs=True))
            text, logprobs, final = "", [], None
            with grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}") as channel:
                # The same key as HTTP's guards gRPC.
                for response in pb_grpc.GenerationStub(channel).Generate(
                        request, timeout=60, metadata=[("authorization", f"Bearer {KEY}")]):
                    if response.HasField("final"):
                        final = response.final
                    else:
                        text += response.chunk.text
                        logprobs += [lp.chosen.logprob for lp in response.chunk.logprobs]
        self.assertEqual(len(logprobs), 16)
        # gRPC's Final carries the same confidence.
        self.assertAlmostEqual(final.confidence.mean_logprob, sum(logprobs) / 16, places=5)
        self.assertAlmostEqual(final.confidence.min_logprob, min(logprobs), places=6)

        def over_http():
            r = self.client.completions.create(model=MODEL, prompt=prompt, max_tokens=16, logprobs=0,
                                               extra_body={"ignore_eos": True}, **params)
            return r.choices[0].text, r.choices[0].logprobs.token_logprobs

        def noise(i):  # other rows in the same batches, of other lengths and samplers
            self.client.completions.create(model=MODEL, prompt=[3 + i] * (5 + 7 * i), max_tokens=12 + i,
                                           temperature=1.3, extra_body={"ignore_eos": True})

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            others = [pool.submit(noise, i) for i in range(6)]
            mine = pool.submit(over_http)
            for f in others:
                f.result()
            http_text, http_logprobs = mine.result()
        self.assertEqual(http_text, text)
        for a, b in zip(http_logprobs, logprobs):
            self.assertAlmostEqual(a, b, places=5)

    # ------------------------------------------------------------ LangChain and curl

    def test_langchain_chat_openai_invokes_and_streams(self):
        from langchain_openai import ChatOpenAI
        llm = ChatOpenAI(base_url=self.server.base_url + "/v1", api_key=KEY, model=MODEL, max_tokens=6,
                         temperature=0.7, seed=5, max_retries=0)
        answer = llm.invoke("Say hello.")
        self.assertIsInstance(answer.content, str)
        self.assertEqual(answer.response_metadata["finish_reason"] in ("stop", "length"), True)
        streamed = "".join(chunk.content for chunk in llm.stream("Say hello."))
        self.assertEqual(streamed, answer.content)  # the same seed, the same tokens

    def test_curl_streams_server_sent_events(self):
        body = json.dumps({"model": MODEL, "messages": self.messages, "max_tokens": 4, "stream": True})
        out = subprocess.run(["curl", "-N", "-s", "--max-time", "60", f"{self.server.base_url}/v1/chat/completions",
                              "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {KEY}",
                              "-d", body], check=True, capture_output=True, text=True).stdout
        events = [line for line in out.split("\n\n") if line.strip()]
        self.assertTrue(all(e.startswith("data: ") for e in events), out)
        self.assertEqual(events[-1], "data: [DONE]")
        self.assertEqual(json.loads(events[0][6:])["object"], "chat.completion.chunk")

    # ------------------------------------------------------------ the spec

    def test_every_response_and_chunk_conforms_to_the_spec(self):
        spec = os.environ.get("MOE_OPENAI_SPEC") or os.path.join(SRC, "tests/data/openai/schemas.json")
        checker = openai_spec_check.Checker(openai_spec_check.load_schemas(spec), self.server.base_url, KEY, MODEL)
        checker.run()
        self.assertTrue(checker.report(), checker.failures)
        self.assertGreater(sum(checker.counts.values()), 30)

    # ------------------------------------------------------------ bad requests

    def test_401_without_or_with_a_wrong_key(self):
        for key in (None, "wrong-key"):
            status, body = http(self.server, "GET", "/v1/models", key=key)
            self.assertEqual(status, 401, key)
            self.assertEqual(body["error"]["type"], "authentication_error")
        with self.assertRaises(openai.AuthenticationError):
            openai.OpenAI(base_url=self.server.base_url + "/v1", api_key="nope", max_retries=0).models.list()
        status, _ = http(self.server, "GET", "/health", key=None)  # open without a key
        self.assertEqual(status, 200)
        self.assertStillServing()

    def test_400s_name_the_field(self):
        chat = "/v1/chat/completions"
        cases = [
            ("/v1/completions", None, b'{"model": "x", "prompt": ', None),  # malformed JSON
            (chat, {"model": MODEL, "messages": self.messages, "temperature": "hot"}, None, "temperature"),
            (chat, {"model": MODEL, "messages": "hello"}, None, "messages"),
            (chat, {"model": MODEL, "messages": self.messages, "max_tokens": 2.5}, None, "max_tokens"),
            (chat, {"model": MODEL, "messages": self.messages, "stop": 7}, None, "stop"),
            (chat, {"model": MODEL, "messages": self.messages, "logprobs": True, "top_logprobs": 99}, None,
             "top_logprobs"),
            (chat, {"model": MODEL, "messages": self.messages, "top_p": 3}, None, "top_p"),
            (chat, {"model": MODEL, "messages": self.messages, "n": 0}, None, "n"),
            (chat, {"model": MODEL, "messages": self.messages, "temperature": -1}, None, "temperature"),
            (chat, {"model": MODEL, "messages": self.messages, "max_tokens": 0}, None, "max_tokens"),
            (chat, {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, None, "messages[0].role"),
            (chat, {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, None,
             "messages[0].content[0].type"),
            (chat, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}] * 4097}, None, "messages"),
            ("/v1/completions", {"model": MODEL, "prompt": [5, 99999]}, None, "prompt[1]"),
            ("/v1/completions", {"model": MODEL, "prompt": ""}, None, "prompt"),  # from prompt encoding
            ("/v1/completions", {"model": MODEL, "prompt": ["ok", ""]}, None, "prompt[1]"),
            ("/v1/completions", {"model": MODEL, "prompt": "x", "logit_bias": {"abc": 1}}, None, "logit_bias[abc]"),
        ]
        for path, body, raw, param in cases:
            status, err = http(self.server, "POST", path, body, raw=raw)
            self.assertEqual(status, 400, (body, err))
            self.assertEqual(err["error"]["type"], "invalid_request_error")
            self.assertEqual(err["error"]["param"], param, err)
            if param:
                self.assertIn(param, err["error"]["message"])
            else:
                self.assertIn("JSON", err["error"]["message"])
            self.assertStillServing()
        with self.assertRaises(openai.BadRequestError):
            self.client.chat.completions.create(model=MODEL, messages=self.messages, top_p=7)

    def test_404_for_an_unknown_model_or_path(self):
        with self.assertRaises(openai.NotFoundError) as caught:
            self.client.chat.completions.create(model="gpt-4o", messages=self.messages)
        self.assertEqual(caught.exception.body["param"], "model")
        self.assertEqual(caught.exception.body["code"], "model_not_found")
        status, err = http(self.server, "GET", "/v1/nothing-here")
        self.assertEqual(status, 404)
        self.assertIn("error", err)
        self.assertStillServing()

    def test_413_for_a_body_too_large(self):
        status, err = http(self.server, "POST", "/v1/completions", raw=b'{"prompt": "' + b"a" * (5 << 20) + b'"}')
        self.assertEqual(status, 413)
        self.assertIn("larger than", err["error"]["message"])
        self.assertStillServing()

    # ------------------------------------------------------------ disconnects

    def test_a_client_that_disconnects_has_its_request_aborted(self):
        aborted_before = metric(self.server, 'moe_requests_finished_total{reason="aborted"}')
        sock = socket.create_connection(("127.0.0.1", self.server.http_port))
        body = json.dumps({"model": MODEL, "prompt": "Go on", "max_tokens": 1500, "stream": True,
                           "ignore_eos": True}).encode()
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: " +
                     str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while got.count(b"data: ") < 3:
            got += sock.recv(4096)
        sock.close()
        deadline = time.time() + 5
        while time.time() < deadline and metric(self.server, "moe_requests_running") > 0:
            time.sleep(0.02)
        self.assertEqual(metric(self.server, "moe_requests_running"), 0)
        self.assertEqual(metric(self.server, 'moe_requests_finished_total{reason="aborted"}'), aborted_before + 1)
        self.assertStillServing()


def sse_events(server, body):
    """The data: payloads of one streamed request, read to the end."""
    req = urllib.request.Request(server.base_url + "/v1/completions", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return [line.decode()[6:].strip() for line in r if line.startswith(b"data: ")]


class StreamLimitsTest(unittest.TestCase):
    """A server with a small stream buffer and a short drain timeout."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model_dir = os.path.join(cls.tmp.name, "model")
        make_model(cls.model_dir)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_a_client_that_stops_reading_is_cut_off_and_its_request_aborted(self):
        server = Server(self.model_dir, "--stream_buffer_limit", "32KiB")
        try:
            aborted = 'moe_requests_finished_total{reason="aborted"}'
            before = metric(server, aborted)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            sock.connect(("127.0.0.1", server.http_port))
            # About 25 MB of events (8 choices, 20 top logprobs a token): more than the kernel's
            # socket buffers can hide.
            body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Go on"}], "n": 8,
                               "max_tokens": 1900, "stream": True, "logprobs": True, "top_logprobs": 20,
                               "ignore_eos": True}).encode()
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            deadline = time.time() + 30  # never reads
            while time.time() < deadline and metric(server, aborted) < before + 8:
                time.sleep(0.05)
            self.assertEqual(metric(server, aborted), before + 8)  # every choice
            self.assertEqual(metric(server, "moe_requests_running"), 0)
            sock.close()
            events = sse_events(server, {"model": MODEL, "prompt": "ok", "max_tokens": 2, "stream": True})
            self.assertEqual(events[-1], "[DONE]")  # a reader that reads is served as ever
        finally:
            server.stop()

    def test_a_full_queue_gives_429_and_the_server_goes_on(self):
        server = Server(self.model_dir, "--max_seqs", "1", "--queue_limit", "1")
        try:
            body = {"model": MODEL, "prompt": "Go", "max_tokens": 400, "ignore_eos": True}
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                results = list(pool.map(lambda _: http(server, "POST", "/v1/completions", body), range(8)))
            refused = [err for status, err in results if status == 429]
            self.assertGreater(len(refused), 0, [status for status, _ in results])
            self.assertEqual(refused[0]["error"]["type"], "rate_limit_error")
            self.assertIn("queue is full", refused[0]["error"]["message"])
            self.assertTrue(all(status in (200, 429) for status, _ in results))
            status, _ = http(server, "POST", "/v1/completions", {"model": MODEL, "prompt": "ok", "max_tokens": 1})
            self.assertEqual(status, 200)
        finally:
            server.stop()

    def test_a_stream_that_fails_after_its_start_ends_with_an_error_event_then_done(self):
        server = Server(self.model_dir, "--drain_timeout", "300ms")
        req = urllib.request.Request(server.base_url + "/v1/completions", method="POST",
                                     headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": MODEL, "prompt": "Go", "max_tokens": 2000,
                                                      "stream": True, "ignore_eos": True}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            first = r.readline()
            self.assertTrue(first.startswith(b"data: {"))
            server.proc.terminate()  # drains for 300 ms, then aborts what is left
            events = [line.decode()[6:].strip() for line in r if line.startswith(b"data: ")]
        self.assertEqual(events[-1], "[DONE]")
        error = json.loads(events[-2])["error"]
        self.assertEqual(error["type"], "service_unavailable")
        self.assertIn("aborted", error["message"])
        self.assertEqual(server.proc.wait(timeout=30), 0)


class NotServingTest(unittest.TestCase):
    def test_draining_server_answers_503_and_finishes_open_streams(self):
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = os.path.join(tmp, "model")
            make_model(model_dir)
            # Long streams (so they are still running when the 503 is asked for) on a busy
            # 2-core machine: a drain timeout they cannot reach.
            server = Server(model_dir, "--drain_timeout", "300s")
            client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
            streams = [client.completions.create(model=MODEL, prompt="Go", max_tokens=2000, stream=True,
                                                 extra_body={"ignore_eos": True}) for _ in range(8)]
            firsts = [next(iter(s)) for s in streams]  # every stream is running
            server.proc.terminate()  # SIGTERM: drain
            time.sleep(0.1)
            status, err = http(server, "POST", "/v1/completions", {"model": MODEL, "prompt": "x"})
            self.assertEqual(status, 503)
            self.assertIn("draining", err["error"]["message"])
            status, _ = http(server, "GET", "/health")
            self.assertEqual(status, 503)
            with concurrent.futures.ThreadPoolExecutor(8) as pool:  # the open streams run to their end
                rests = list(pool.map(list, streams))
            for first, rest in zip(firsts, rests):
                self.assertEqual(rest[-1].choices[0].finish_reason, "length")
            self.assertEqual(server.proc.wait(timeout=60), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
