"""Weights files that change under the real normserved (issue #12).

1. model.safetensors of the serving deen is overwritten, truncated and restored in place for
   about 15 s while the repository is polled every 0.2 s and a client keeps translating: the
   server must stay alive (a memory-mapped file raised SIGBUS here), every reply must be OK
   or a clear error, never a dropped connection, and once the original is back deen serves.
2. A new version whose weights hold NaN is refused at load with the tensor's name in
   GetModel's error, and the serving version keeps answering.
3. A new version whose safetensors header holds bytes that are not UTF-8 is refused, and
   GetModel's error (a proto string) still parses: the bytes come back escaped.

Usage: weights_rewrite_e2e_test.py NORMSERVED MODEL_REPOSITORY
"""
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import threading
import time
import unittest

import grpc

from grpc_stubs import pb, stub
from normserved_process import NormservedProcess

NORMSERVED, REPOSITORY = sys.argv[1:3]
POLL = ("--model-control", "poll", "--repository-poll-secs", "0.2")
REWRITE_SECS = 15
# Replies that say what went wrong; UNAVAILABLE is what a dropped connection looks like, and
# INTERNAL or UNKNOWN is a server that did not know what happened.
UNCLEAR = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def copy_repository(models):
    root = tempfile.mkdtemp(prefix="normserve_weights_e2e_")
    for model in models:
        shutil.copytree(os.path.join(REPOSITORY, model), os.path.join(root, model))
    return root


def translate(client, text="Guten Morgen", version=0):
    request = pb.TranslateRequest(model="deen", texts=[text.encode()], version=version)
    return client.Translate(request, timeout=30)


def wait_for(condition, what, secs=60):
    """Polls `condition` until it holds; a bounded wait, not a timing assertion."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what} after {secs} s")


class Translator(threading.Thread):
    """Translates in a loop until stopped; records each reply's status code and details."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.client = stub(target)
        self.replies = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                translate(self.client)
                self.replies.append((grpc.StatusCode.OK, ""))
            except grpc.RpcError as e:
                self.replies.append((e.code(), e.details() or ""))


def rewrite_in_place(path, secs, rng):
    """Overwrites, truncates and restores `path` in place (open r+b, never a new file) until
    `secs` have passed; pauses of up to 0.6 s let the poller load some states that settled."""
    original = open(path, "rb").read()
    header_end = 8 + struct.unpack("<Q", original[:8])[0]
    steps = 0
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        with open(path, "r+b") as f:
            action = rng.randrange(4)
            if action == 0:  # other bytes over some of the tensor data: the header still parses
                for _ in range(rng.randint(1, 8)):
                    offset = rng.randrange(header_end, len(original))
                    f.seek(offset)
                    f.write(rng.randbytes(min(65536, len(original) - offset)))
            elif action == 1:  # other bytes over the header
                offset = rng.randrange(0, header_end)
                f.seek(offset)
                f.write(rng.randbytes(min(256, header_end - offset)))
            elif action == 2:  # cut short, as a copy in progress would be
                f.truncate(rng.randrange(0, len(original)))
            # Then the original back, chunk by chunk, as a slow copy writes it.
            if action == 3 or rng.random() < 0.5:
                f.truncate(0)
                for offset in range(0, len(original), 262144):
                    f.seek(offset)
                    f.write(original[offset:offset + 262144])
                    f.flush()
        steps += 1
        time.sleep(rng.uniform(0, 0.6))
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(original)
    return steps


def set_nan(path, tensor, count):
    """Sets the first `count` values of `tensor` in a safetensors file to NaN."""
    with open(path, "r+b") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        entry = header[tensor]
        nan = {"F32": struct.pack("<I", 0x7FC00000), "F16": struct.pack("<H", 0x7E00),
               "BF16": struct.pack("<H", 0x7FC0)}[entry["dtype"]]
        f.seek(8 + header_len + entry["data_offsets"][0])
        f.write(nan * count)


def write_non_utf8_key(path):
    """Writes a header key that is not UTF-8, which the JSON parser quotes in its error."""
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b'{"\xff\xfe\x80":')


def add_version_2(root, change):
    """deen version 2: a copy of version 1 whose model.safetensors `change` edits, prepared
    beside the repository and moved in whole."""
    staging = os.path.join(root, "staging")
    shutil.copytree(os.path.join(root, "deen", "1"), staging)
    change(os.path.join(staging, "model.safetensors"))
    os.rename(staging, os.path.join(root, "deen", "2"))


class WeightsRewrite(unittest.TestCase):
    def test_rewriting_the_serving_weights_in_place_never_kills_the_server(self):
        root = copy_repository(["deen"])
        normserved = NormservedProcess(NORMSERVED, root, *POLL)
        try:
            client = stub(normserved.target)
            self.assertEqual(translate(client).translations[0].hypotheses[0].text, "Good morning")
            translator = Translator(normserved.target)
            translator.start()
            seed = random.randrange(1 << 30)
            steps = rewrite_in_place(os.path.join(root, "deen", "1", "model.safetensors"),
                                     REWRITE_SECS, random.Random(seed))
            translator.stopping.set()
            translator.join(timeout=60)
            message = f"seed {seed}, {steps} rewrites"
            self.assertIsNone(normserved.process.poll(),
                              f"normserved died ({message}):\n" + "".join(normserved.log[-20:]))
            self.assertGreater(len(translator.replies), 0, message)
            unclear = [r for r in translator.replies if r[0] in UNCLEAR or
                       (r[0] != grpc.StatusCode.OK and not r[1])]
            self.assertEqual(unclear, [], message)
            # The rewrites were seen: some states were loaded and refused.
            self.assertTrue(any("cannot load deen" in line for line in normserved.log),
                            f"no failed load of deen in the log ({message})")

            # The original is back: deen serves it (reloaded or never replaced).
            def serves_the_original():
                info = client.GetModel(pb.GetModelRequest(model="deen"), timeout=10)
                if not info.ready:
                    return False
                try:
                    text = translate(client).translations[0].hypotheses[0].text
                except grpc.RpcError:
                    return False
                return text == "Good morning"
            wait_for(serves_the_original, "deen to serve the original weights again")
            self.assertIsNone(normserved.process.poll())
        finally:
            normserved.stop()
            shutil.rmtree(root, ignore_errors=True)

    def test_a_version_with_nan_weights_is_refused_and_the_serving_one_stays(self):
        root = copy_repository(["deen"])
        normserved = NormservedProcess(NORMSERVED, root, *POLL)
        try:
            client = stub(normserved.target)
            self.assertEqual(translate(client).version, 1)
            add_version_2(root, lambda weights: set_nan(weights, "decoder.layers.0.fc1.weight", 3))

            def refused():
                info = client.GetModel(pb.GetModelRequest(model="deen"), timeout=10)
                return "decoder.layers.0.fc1.weight" in info.error
            wait_for(refused, "GetModel to report the NaN tensor of version 2")
            info = client.GetModel(pb.GetModelRequest(model="deen"), timeout=10)
            self.assertIn("holds 3 non-finite values", info.error)
            self.assertIn("version 2", info.error)
            self.assertEqual(info.version, 1)
            self.assertTrue(info.ready)
            reply = translate(client)
            self.assertEqual(reply.version, 1)
            self.assertEqual(reply.translations[0].hypotheses[0].text, "Good morning")
        finally:
            normserved.stop()
            shutil.rmtree(root, ignore_errors=True)

    def test_a_header_that_is_not_utf8_is_reported_escaped(self):
        root = copy_repository(["deen"])
        normserved = NormservedProcess(NORMSERVED, root, *POLL)
        try:
            client = stub(normserved.target)
            add_version_2(root, write_non_utf8_key)

            def refused():
                info = client.GetModel(pb.GetModelRequest(model="deen"), timeout=10)
                return "version 2" in info.error
            wait_for(refused, "GetModel to report version 2 as refused")
            info = client.GetModel(pb.GetModelRequest(model="deen"), timeout=10)
            self.assertIn("\\x", info.error)
            self.assertEqual(info.version, 1)
            self.assertEqual(translate(client).translations[0].hypotheses[0].text, "Good morning")
        finally:
            normserved.stop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
