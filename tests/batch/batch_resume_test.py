#!/usr/bin/env python3
"""moe-batch survives a kill: a 500-request run is killed with SIGKILL about halfway, a cut
short last line is added as a kill could leave it, and --resume finishes the run. Against an
uninterrupted run: the same custom_ids, none twice, the same greedy (and derived-seed
sampled) outputs. The same after a disk that fills up mid-run. Also: bad lines go to the error file with their line numbers, and the
output of a run without --resume is never overwritten.

    MOE_BIN_DIR=build/bin MOE_SOURCE_DIR=. python3 tests/batch/batch_resume_test.py
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BIN = os.environ["MOE_BIN_DIR"]
SRC = os.environ["MOE_SOURCE_DIR"]
N = 500
sys.path.insert(0, os.path.join(SRC, "tests/support"))
import tiny_model  # noqa: E402


def make_model(out):
    tiny_model.make_model(BIN, SRC, out)


def requests():
    for i in range(N):
        if i % 3 == 0:
            yield {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"messages": [{"role": "user", "content": f"Count to {i}."}], "max_tokens": 12,
                            "temperature": 0, "ignore_eos": True}}
        elif i % 3 == 1:
            yield {"id": f"req-{i}", "prompt": f"Number {i} is", "max_tokens": 12, "temperature": 0,
                   "ignore_eos": True}
        else:  # sampled, no seed: the one derived from the custom_id makes it reproducible
            yield {"id": f"req-{i}", "prompt": f"Story {i}:", "max_tokens": 12, "temperature": 0.9,
                   "ignore_eos": True}


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def outputs(lines):
    return {l["custom_id"]: [c.get("text", c.get("message", {}).get("content"))
                             for c in l["response"]["body"]["choices"]] for l in lines}


class BatchResumeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = os.path.join(cls.tmp.name, "model")
        make_model(cls.model)
        cls.input = os.path.join(cls.tmp.name, "in.jsonl")
        with open(cls.input, "w") as f:
            for r in requests():
                f.write(json.dumps(r) + "\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def batch(self, out, *args):
        return [os.path.join(BIN, "moe-batch"), "--model", self.model, "--input", self.input,
                "--output", out, "--kv_blocks", "512", *args]

    def test_a_killed_run_resumes_to_the_same_results(self):
        ref = os.path.join(self.tmp.name, "ref.jsonl")
        subprocess.run(self.batch(ref), check=True, stderr=subprocess.DEVNULL)
        reference = read(ref)
        self.assertEqual(len(reference), N)

        out = os.path.join(self.tmp.name, "out.jsonl")
        run = subprocess.Popen(self.batch(out, "--max_inflight", "4"), stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and run.poll() is None:
            if os.path.exists(out) and sum(1 for _ in open(out)) >= N // 2:
                break
            time.sleep(0.005)
        self.assertIsNone(run.poll(), "the run ended before it could be killed halfway")
        run.send_signal(signal.SIGKILL)
        run.wait()
        before = read(out)
        self.assertGreaterEqual(len(before), N // 2)
        self.assertLess(len(before), N)
        with open(out, "a") as f:  # what a kill in the middle of a write leaves
            f.write('{"id": "batch_req_0", "custom_id": "req-')

        subprocess.run(self.batch(out, "--resume"), check=True, stderr=subprocess.DEVNULL)
        after = read(out)  # every line parses: the cut-short one was dropped
        ids = [l["custom_id"] for l in after]
        self.assertEqual(len(ids), len(set(ids)), "a request was written twice")
        self.assertEqual(set(ids), {l["custom_id"] for l in reference})
        self.assertEqual(outputs(after), outputs(reference))
        seeds = {l["custom_id"]: l["seed"] for l in reference}
        self.assertEqual({l["custom_id"]: l["seed"] for l in after}, seeds)

    def test_a_full_disk_names_the_file_and_what_was_written_resumes(self):
        # A disk that fills up: writes past 64 KiB fail (RLIMIT_FSIZE gives EFBIG, SIGXFSZ
        # ignored), as they would with ENOSPC, partway through a line or between lines.
        ref = os.path.join(self.tmp.name, "full_ref.jsonl")
        subprocess.run(self.batch(ref), check=True, stderr=subprocess.DEVNULL)
        out = os.path.join(self.tmp.name, "full.jsonl")
        limit = 64 << 10

        def small_disk():
            import resource
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        run = subprocess.run(self.batch(out), preexec_fn=small_disk, stderr=subprocess.PIPE, text=True,
                             timeout=300)
        self.assertNotEqual(run.returncode, 0, "the run succeeded on a full disk")
        self.assertIn(f"cannot write {out}", run.stderr)
        self.assertLess(run.returncode, 128, f"killed by a signal: {run.stderr}")
        self.assertLessEqual(os.path.getsize(out), limit)
        with open(out) as f:
            written = f.read().splitlines(keepends=True)
        whole = [json.loads(l) for l in written if l.endswith("\n")]
        self.assertGreater(len(whole), 0)
        self.assertLess(len(whole), N)

        subprocess.run(self.batch(out, "--resume"), check=True, stderr=subprocess.DEVNULL, timeout=300)
        after = read(out)
        ids = [l["custom_id"] for l in after]
        self.assertEqual(len(ids), len(set(ids)), "a request was written twice")
        self.assertEqual(outputs(after), outputs(read(ref)))

    def test_bad_lines_go_to_the_error_file_and_output_is_never_overwritten(self):
        bad_input = os.path.join(self.tmp.name, "bad.jsonl")
        with open(bad_input, "w") as f:
            f.write('{"id": "ok", "prompt": "hi", "max_tokens": 2}\n')
            f.write("{not json\n")
            f.write('{"id": "t", "prompt": "hi", "temperature": "warm"}\n')
        out = os.path.join(self.tmp.name, "bad_out.jsonl")
        cmd = [os.path.join(BIN, "moe-batch"), "--model", self.model, "--input", bad_input, "--output", out,
               "--kv_blocks", "64"]
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        self.assertEqual([l["custom_id"] for l in read(out)], ["ok"])
        errors = read(os.path.join(self.tmp.name, "bad_out.errors.jsonl"))
        self.assertEqual([e["line"] for e in errors], [2, 3])
        self.assertEqual(errors[1]["response"]["status_code"], 400)
        self.assertEqual(errors[1]["response"]["body"]["error"]["param"], "temperature")
        resumed = subprocess.run(cmd + ["--resume"], check=True, capture_output=True, text=True)
        self.assertIn("3 skipped", resumed.stderr)  # the good line and both bad ones
        self.assertEqual(len(read(os.path.join(self.tmp.name, "bad_out.errors.jsonl"))), 2)  # none twice
        again = subprocess.run(cmd, capture_output=True, text=True)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("--resume", again.stderr)
        strict = subprocess.run(cmd[:-4] + ["--output", out + ".strict", "--kv_blocks", "64", "--strict"],
                                capture_output=True, text=True)
        self.assertNotEqual(strict.returncode, 0)
        self.assertIn("line 2", strict.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
