"""Hostile and careless requests against the real normserved, through a real gRPC client.

Each test is a regression test of a defect of issue #12: huge texts that SentencePiece takes
seconds to tokenize, requests that would need gigabytes in one tensor, Generate streams whose
held-back bytes cut a UTF-8 character, a shutdown grace that did not bound running work, and
a Generate without a model name. Run with Debian's /usr/bin/python3 (tests/e2e/grpc_stubs.py).

Usage: request_bounds_e2e_test.py NORMSERVED MODEL_REPOSITORY
"""
import concurrent.futures
import signal
import sys
import time
import unittest

import grpc

from grpc_stubs import pb, stub
from normserved_process import NormservedProcess

NORMSERVED, REPOSITORY = sys.argv[1:3]
EMOJI = "\U0001F600"  # outside the bundled vocabularies: SentencePiece's slow case


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


class RequestBounds(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.normserved = NormservedProcess(
            NORMSERVED, REPOSITORY, "--threads", "1", "--memory-budget-mb", "64")
        cls.client = stub(cls.normserved.target)

    @classmethod
    def tearDownClass(cls):
        cls.normserved.stop()

    def assert_alive(self):
        self.assertIsNone(self.normserved.process.poll(), "normserved died")

    def call_error(self, method, request, timeout=60):
        with self.assertRaises(grpc.RpcError) as raised:
            method(request, timeout=timeout)
        return raised.exception

    def test_a_megabyte_text_is_refused_before_tokenizing(self):
        big = (EMOJI * (1 << 18)).encode()  # 1 MiB
        error = self.call_error(self.client.Translate,
                                pb.TranslateRequest(model="deen", texts=[b"Hallo", big]))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("text 1 is 1048576 bytes", error.details())
        self.assertIn("--max-text-bytes", error.details())
        # Score and Generate check the same way.
        error = self.call_error(self.client.Score, pb.ScoreRequest(model="enlm", texts=[big]))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("bytes per text", error.details())
        with self.assertRaises(grpc.RpcError) as raised:
            list(self.client.Generate(pb.GenerateRequest(model="enlm", prompt=big), timeout=60))
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assert_alive()

    def test_huge_requests_beside_a_normal_one_leave_it_within_its_deadline(self):
        # Before the fix two 1 MB emoji texts took 13-28 s each on a gRPC thread, and a normal
        # Translate beside them missed a 10 s deadline.
        big = (EMOJI * (1 << 18)).encode()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            hostile = [pool.submit(self.client.Translate.future(
                pb.TranslateRequest(model="deen", texts=[big] * 3), timeout=60).exception)
                for _ in range(6)]
            normal = self.client.Translate(pb.TranslateRequest(model="deen", texts=[b"Guten Morgen"]),
                                           timeout=10)
            self.assertEqual(len(normal.translations), 1)
            for future in hostile:
                self.assertEqual(future.result().code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assert_alive()

    def test_the_largest_text_that_passes_the_byte_check_is_answered_within_a_deadline(self):
        # 16 KiB of characters outside the vocabulary: SentencePiece's slow case at the byte
        # limit. Runs of unknown characters become few tokens, so it is translated.
        text = (EMOJI * 4096).encode()
        reply = self.client.Translate(pb.TranslateRequest(model="deen", texts=[text]), timeout=10)
        self.assertEqual(len(reply.translations), 1)

    def test_a_message_over_the_limit_is_resource_exhausted(self):
        texts = [b"Hallo Welt " * 1000] * 500  # 5.5 MB, over the default 4 MiB
        error = self.call_error(self.client.Translate,
                                pb.TranslateRequest(model="deen", texts=texts))
        self.assertEqual(error.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assert_alive()

    def test_too_many_texts_name_the_limit(self):
        error = self.call_error(self.client.Score,
                                pb.ScoreRequest(model="enlm", texts=[b"the house"] * 1025))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("at most 1024", error.details())

    def test_a_score_that_would_take_gigabytes_runs_in_budget_sized_calls(self):
        # 256 texts of 255 tokens as one forward: logits alone 256 x 256 x 4000 x 4 bytes x 3
        # = 3.1 GB. The budget here is 64 MiB per model call.
        words = "the house is big and the garden is small".split()
        text = " ".join(words[i % len(words)] for i in range(200)).encode()
        before = peak_rss_mib(self.normserved.process.pid)
        reply = self.client.Score(pb.ScoreRequest(model="enlm", texts=[text] * 256), timeout=300)
        self.assertEqual(len(reply.results), 256)
        first = reply.results[0].total_logprob
        for result in reply.results:
            self.assertAlmostEqual(result.total_logprob, first, delta=1e-3 * abs(first))
        after = peak_rss_mib(self.normserved.process.pid)
        self.assertLess(after - before, 1024, f"peak RSS grew from {before} to {after} MiB")
        self.assert_alive()

    def test_a_text_that_can_never_fit_the_budget_is_invalid_argument(self):
        # At beam 64 a long text needs more than 64 MiB in one call.
        text = " ".join(["Haus"] * 120).encode()
        error = self.call_error(self.client.Translate, pb.TranslateRequest(
            model="deen", texts=[text], options=pb.TranslateOptions(beam_size=64, max_length_a=2)))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("memory budget of 64.0 MiB", error.details())
        self.assertIn("memory_budget_mb", error.details())

    def test_generate_streams_only_whole_utf8_characters(self):
        # A stop string of 4 bytes holds back 3 bytes, which cut multi-byte characters in
        # half before the fix; the Python client then failed to deserialize the message.
        multibyte_seen = 0
        for seed in range(40):
            request = pb.GenerateRequest(model="enlm", prompt="the caf\u00e9 is".encode(),
                                         options=pb.GenerateOptions(
                                             seed=seed, temperature=2.0, max_new_tokens=40,
                                             stop=["\u00e9\u00e9", "zzzz"]))
            pieces = list(self.client.Generate(request, timeout=60))
            self.assertTrue(pieces[-1].finish_reason, pieces[-1])
            text = "".join(p.text for p in pieces)
            multibyte_seen += sum(1 for c in text if ord(c) > 127)
        self.assertGreater(multibyte_seen, 0, "no multi-byte character was generated")

    def test_invalid_utf8_in_a_string_field_is_invalid_argument(self):
        # Hand-made wire bytes: protobuf clients refuse to send them, a hostile client can.
        # TranslateRequest{model (field 1, a string) = b"\xff\xfe", texts = [b"Hallo"]}.
        raw = b"\x0a\x02\xff\xfe" + b"\x12\x05Hallo"
        translate = grpc.insecure_channel(self.normserved.target).unary_unary(
            "/normserve.v1.NormServe/Translate")
        with self.assertRaises(grpc.RpcError) as raised:
            translate(raw, timeout=30)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("invalid UTF-8", raised.exception.details())
        # GenerateRequest{model = "enlm", options = {stop = [b"\xc3"]}}: a server stream.
        raw = b"\x0a\x04enlm" + b"\x1a\x03\x32\x01\xc3"
        generate = grpc.insecure_channel(self.normserved.target).unary_stream(
            "/normserve.v1.NormServe/Generate")
        with self.assertRaises(grpc.RpcError) as raised:
            list(generate(raw, timeout=30))
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("not a valid Generate message", raised.exception.details())
        self.assert_alive()

    def test_stop_strings_are_bounded(self):
        for stop, phrase in [(["x"] * 17, "at most 16 stop strings"),
                             (["y" * 257], "1..256 bytes")]:
            with self.assertRaises(grpc.RpcError) as raised:
                list(self.client.Generate(pb.GenerateRequest(
                    model="enlm", prompt=b"the", options=pb.GenerateOptions(stop=stop)),
                    timeout=30))
            self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(phrase, raised.exception.details())
        self.assert_alive()

    def test_generate_without_a_model_name_is_invalid_argument(self):
        with self.assertRaises(grpc.RpcError) as raised:
            list(self.client.Generate(pb.GenerateRequest(prompt=b"the"), timeout=30))
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("names no model", raised.exception.details())


class ShutdownGraceIsABound(unittest.TestCase):
    def test_running_work_stops_at_the_end_of_the_grace(self):
        # Before the fix a beam-64 batch went on for 62 s with --shutdown-grace-secs 1.
        normserved = NormservedProcess(NORMSERVED, REPOSITORY, "--threads", "1",
                                       "--shutdown-grace-secs", "1")
        try:
            client = stub(normserved.target)
            texts = [b"Morgen fahre ich mit dem Zug nach Berlin und dann weiter nach Hamburg"] * 64
            request = pb.TranslateRequest(
                model="deen", texts=texts,
                options=pb.TranslateOptions(beam_size=64, max_length_a=3, max_length_b=50))
            calls = [client.Translate.future(request, timeout=300) for _ in range(2)]
            time.sleep(2)  # the first batch is running
            started = time.monotonic()
            normserved.process.send_signal(signal.SIGTERM)
            code = normserved.process.wait(timeout=60)
            took = time.monotonic() - started
            self.assertEqual(code, 0)
            for call in calls:
                error = call.exception(timeout=30)
                self.assertIsNotNone(error, "a beam-64 batch of 64 long texts finished in 2 s?")
                self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE, error.details())
            # One decoding step past the grace is allowed; the process exits well before the
            # minutes the batch would take.
            self.assertLess(took, 30, f"exit took {took:.1f} s")
        finally:
            normserved.stop()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
