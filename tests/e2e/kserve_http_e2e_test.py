"""The Open Inference Protocol (KServe v2) over HTTP/REST (--http-address) against the real
normserved: Triton's own HTTP client (tritonclient.http) translates, scores and generates
with JSON and binary tensors; README's curl examples run as written and print what README
shows; bodies are bounded (413), tokens travel as `Authorization: Bearer`, and errors carry
normserve.v1's message with the matching HTTP status.

Usage: kserve_http_e2e_test.py NORMSERVED MODEL_REPOSITORY
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import kserve_clients  # first: re-runs this test inside the venv of Triton's clients

import numpy as np  # noqa: E402
import tritonclient.http as triton  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from grpc_stubs import pb, stub  # noqa: E402

NORMSERVED, REPOSITORY = sys.argv[1:3]
INFER = "kserve-http-infer-token-0123456789"
README = os.path.join(kserve_clients.ROOT, "README.md")
# The port README's examples use.
README_ADDRESS = "localhost:8000"


def text_input(texts, name="TEXT", binary=True):
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object),
                               binary_data=binary)
    return tensor


def strings(array):
    """Binary outputs come back as bytes, JSON ones as str."""
    return [b.decode() if isinstance(b, bytes) else b for b in array.reshape(-1)]


def readme_curl_examples():
    """(command, expected output) of every `$ curl` line in README's Open Inference Protocol
    section, whose output is the line below it."""
    with open(README) as f:
        text = f.read()
    section = text[text.index("## Open Inference Protocol"):]
    section = section[:section.index("\n## ", 1)]
    lines = section.splitlines()
    return [(line[2:], lines[i + 1]) for i, line in enumerate(lines)
            if line.startswith("$ curl ")]


class KServeHttp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kserve-http-")
        tokens = os.path.join(cls.dir, "tokens")
        with open(tokens, "w") as f:
            f.write(f"infer {INFER}\n")
        # README's examples run on a server without tokens, as README shows them.
        cls.open_server, cls.open_port = kserve_clients.start(NORMSERVED, REPOSITORY)
        cls.server, cls.port = kserve_clients.start(
            NORMSERVED, REPOSITORY, "--auth-tokens-file", tokens, "--max-message-bytes", "65536")
        cls.client = triton.InferenceServerClient(f"127.0.0.1:{cls.open_port}")
        cls.v1 = stub(cls.open_server.target)

    @classmethod
    def tearDownClass(cls):
        cls.open_server.stop()
        cls.server.stop()
        shutil.rmtree(cls.dir)

    def request(self, method, path, body=None, headers=None, port=None):
        connection = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def test_readme_curl_examples_print_what_readme_shows(self):
        examples = readme_curl_examples()
        self.assertGreaterEqual(len(examples), 5)
        for command, expected in examples:
            command = command.replace(README_ADDRESS, f"127.0.0.1:{self.open_port}")
            out = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                 timeout=60)
            self.assertEqual(out.returncode, 0, command + "\n" + out.stderr)
            self.assertEqual(out.stdout.strip(), expected.strip(), command)

    def test_translate_with_binary_and_json_tensors(self):
        texts = ["Guten Morgen", "ein großes Haus"]
        expected = self.v1.Translate(pb.TranslateRequest(
            model="deen", texts=[t.encode() for t in texts],
            options=pb.TranslateOptions(beam_size=2, n_best=2)), timeout=60)
        for binary in (True, False):
            result = self.client.infer(
                "deen", [text_input(texts, binary=binary)], parameters={"beam_size": 2, "n_best": 2},
                outputs=[triton.InferRequestedOutput("TRANSLATION", binary_data=binary),
                         triton.InferRequestedOutput("SCORE", binary_data=binary)])
            self.assertEqual(strings(result.as_numpy("TRANSLATION")),
                             [h.text for t in expected.translations for h in t.hypotheses])
            np.testing.assert_allclose(
                result.as_numpy("SCORE").reshape(-1),
                [h.score for t in expected.translations for h in t.hypotheses], rtol=1e-5)

    def test_score_and_generate(self):
        result = self.client.infer("enlm", [text_input(["the house is big"])])
        expected = self.v1.Score(pb.ScoreRequest(model="enlm", texts=[b"the house is big"]),
                                 timeout=60)
        np.testing.assert_allclose(result.as_numpy("LOGPROB"),
                                   [expected.results[0].total_logprob], rtol=1e-6)
        generated = self.client.infer("enlm", [text_input(["the house"])],
                                      parameters={"task": "generate", "seed": 5,
                                                  "max_new_tokens": 10})
        expected = list(self.v1.Generate(pb.GenerateRequest(
            model="enlm", prompt=b"the house",
            options=pb.GenerateOptions(seed=5, max_new_tokens=10)), timeout=60))
        self.assertEqual(strings(generated.as_numpy("GENERATED")),
                         ["".join(m.text for m in expected)])
        self.assertEqual(strings(generated.as_numpy("FINISH_REASON")),
                         [expected[-1].finish_reason])

    def test_health_and_metadata(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready("deen"))
        self.assertFalse(self.client.is_model_ready("deen", "7"))
        metadata = self.client.get_model_metadata("enlm")
        self.assertEqual(metadata["platform"], "normserve_transformer_lm")
        self.assertEqual(self.client.get_model_config("deen")["input"][0]["name"], "TEXT")
        status, body = self.request("GET", "/v2/models/nosuchmodel", port=self.open_port)
        self.assertEqual(status, 404)
        self.assertIn("nosuchmodel", json.loads(body)["error"])

    def test_tokens_and_statuses(self):
        infer = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1],
                                        "data": ["Hallo"]}]})
        path = "/v2/models/deen/infer"
        status, body = self.request("POST", path, infer)
        self.assertEqual(status, 401, body)
        status, body = self.request("POST", path, infer,
                                    {"Authorization": "Bearer wrong-token-0123456789"})
        self.assertEqual(status, 401, body)
        status, body = self.request("POST", path, infer, {"Authorization": "Bearer " + INFER})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["outputs"][0]["name"], "TRANSLATION")
        # Health needs no token.
        self.assertEqual(self.request("GET", "/v2/health/ready")[0], 200)
        bad = json.dumps({"parameters": {"beam_size": 99}, "inputs": json.loads(infer)["inputs"]})
        status, body = self.request("POST", path, bad, {"Authorization": "Bearer " + INFER})
        self.assertEqual((status, json.loads(body)["error"]),
                         (400, "beam_size is 99; it must be in 1..64"))
        status, body = self.request("POST", path, "{not json", {"Authorization": "Bearer " + INFER})
        self.assertEqual(status, 400)
        self.assertIn("not a JSON object", body)
        client = triton.InferenceServerClient(f"127.0.0.1:{self.port}")
        with self.assertRaises(InferenceServerException):
            client.infer("deen", [text_input(["Hallo"])])
        result = client.infer("deen", [text_input(["Hallo"])],
                              headers={"Authorization": "Bearer " + INFER})
        self.assertEqual(len(strings(result.as_numpy("TRANSLATION"))), 1)

    def test_bodies_are_bounded(self):
        big = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1],
                                      "data": ["x" * 100_000]}]})
        status, body = self.request("POST", "/v2/models/deen/infer", big,
                                    {"Authorization": "Bearer " + INFER})
        self.assertEqual(status, 413)
        self.assertIn("--max-message-bytes", body)
        self.assertEqual(self.request("GET", "/v1/models")[0], 404)
        self.assertIsNone(self.server.process.poll())


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
