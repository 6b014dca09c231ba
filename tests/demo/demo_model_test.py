#!/usr/bin/env python3
"""The demo model (models/demo) answers its held-out problems: 200 additions and sorts it
never trained on (models/demo/held_out.jsonl, written by tools/demo_model/train.py), asked
over the real server's OpenAI chat API with greedy decoding on the CPU backend; at least
97% must be right. And moe-client, as scripts/serve prints it, gets a correct sum.

    MOE_BIN_DIR=build/bin MOE_SOURCE_DIR=. python3 tests/demo/demo_model_test.py
"""
import concurrent.futures
import json
import os
import re
import subprocess
import tempfile
import time
import unittest
import urllib.request

BIN = os.environ["MOE_BIN_DIR"]
SRC = os.environ["MOE_SOURCE_DIR"]
MODEL = os.path.join(SRC, "models/demo")


class DemoModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.log = tempfile.NamedTemporaryFile(prefix="moe_demo_test.", suffix=".log", delete=False)
        cls.proc = subprocess.Popen([os.path.join(BIN, "moe-server"), "--model", MODEL, "--backend", "cpu",
                                     "--port", "0", "--http_port", "0", "--kv_blocks", "1024"],
                                    stdout=subprocess.PIPE, stderr=cls.log, text=True)
        out, deadline = "", time.time() + 60
        while "moe-server: serving" not in out:
            line = cls.proc.stdout.readline()
            if not line or time.time() > deadline:
                raise RuntimeError(f"moe-server did not start: {out}")
            out += line
        cls.url = "http://127.0.0.1:" + re.search(r"HTTP on [^:]+:(\d+)", out).group(1)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=30)

    def ask(self, question):
        body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": question}],
                           "max_tokens": 16, "temperature": 0}).encode()
        req = urllib.request.Request(self.url + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["choices"][0]["message"]["content"]

    def test_answers_at_least_97_percent_of_held_out_problems(self):
        with open(os.path.join(MODEL, "held_out.jsonl")) as f:
            problems = [json.loads(line) for line in f]
        self.assertEqual(len(problems), 200)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(self.ask, [p["question"] for p in problems]))
        wrong = [(p["question"], p["answer"], a) for p, a in zip(problems, answers) if a.strip() != p["answer"]]
        accuracy = 1 - len(wrong) / len(problems)
        print(f"held-out accuracy over the server: {accuracy:.3f} ({len(problems) - len(wrong)}/{len(problems)})")
        for q, want, got in wrong[:10]:
            print(f"  {q!r}: want {want!r}, got {got!r}")
        self.assertGreaterEqual(accuracy, 0.97)

    def test_moe_client_prints_a_correct_sum(self):
        out = subprocess.run([os.path.join(BIN, "moe-client"), "--url", self.url, "--chat", "What is 12+30?"],
                             check=True, capture_output=True, text=True).stdout
        self.assertEqual(out.strip(), "42")
        streamed = subprocess.run([os.path.join(BIN, "moe-client"), "--url", self.url, "--chat", "--stream",
                                   "What is 250+199?"], check=True, capture_output=True, text=True).stdout
        self.assertEqual(streamed.strip(), "449")


if __name__ == "__main__":
    unittest.main(verbosity=2)
