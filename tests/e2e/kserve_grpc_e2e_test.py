"""The Open Inference Protocol (KServe v2) over gRPC, driven by Triton's own Python client
(tritonclient.grpc) against the real normserved: health, metadata, translate, score and
streamed generate, both forms of BYTES tensors, errors and tokens as on normserve.v1, the
repository calls, and the proto itself against tritonclient's.

The answers are checked against normserve.v1's for the same request (tests/e2e/grpc_stubs.py),
since the KServe calls are meant to be those calls.

Usage: kserve_grpc_e2e_test.py NORMSERVED MODEL_REPOSITORY
"""
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import urllib.request

import kserve_clients  # first: re-runs this test inside the venv of Triton's clients

import numpy as np  # noqa: E402
import tritonclient.grpc as triton  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool  # noqa: E402
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from grpc_stubs import channel, pb, stub  # noqa: E402

NORMSERVED, REPOSITORY = sys.argv[1:3]
INFER = "kserve-infer-token-0123456789abcdef"
ADMIN = "kserve-admin-token-0123456789abcdef"
TEXTS = ["Guten Morgen", "ein großes Haus", "Vielen Dank!"]


def bearer(token):
    return {"authorization": "Bearer " + token}


def text_input(texts, name="TEXT"):
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    return tensor


def strings(array):
    return [b.decode() for b in array.reshape(-1)]


class KServeGrpc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kserve-grpc-")
        tokens = os.path.join(cls.dir, "tokens")
        with open(tokens, "w") as f:
            f.write(f"infer {INFER}\nadmin {ADMIN}\n")
        # A repository of its own: the test unloads and loads a model.
        cls.repository = os.path.join(cls.dir, "repository")
        shutil.copytree(REPOSITORY, cls.repository)
        cls.server, _ = kserve_clients.start(NORMSERVED, cls.repository, "--auth-tokens-file",
                                             tokens, "--model-control", "explicit")
        cls.client = triton.InferenceServerClient(cls.server.target)
        cls.v1 = stub(cls.server.target)
        cls.raw = service_pb2_grpc.GRPCInferenceServiceStub(channel(cls.server.target))

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.dir)

    def v1_metadata(self):
        return [("authorization", "Bearer " + INFER)]

    def assertFails(self, code, call, message_part=""):
        with self.assertRaises(InferenceServerException) as caught:
            call()
        self.assertEqual(caught.exception.status(), "StatusCode." + code,
                         caught.exception.message())
        self.assertIn(message_part, caught.exception.message())
        return caught.exception.message()

    def test_the_proto_matches_tritonclients_field_for_field(self):
        out = os.path.join(self.dir, "mine.pb")
        subprocess.run(["protoc", "--proto_path", os.path.join(kserve_clients.ROOT, "proto"),
                        "--descriptor_set_out", out, "inference/grpc_service.proto"], check=True)
        files = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            files.ParseFromString(f.read())
        pool = descriptor_pool.DescriptorPool()
        mine = pool.Add(files.file[0])
        mine = pool.FindFileByName("inference/grpc_service.proto")
        theirs = {**service_pb2.DESCRIPTOR.message_types_by_name,
                  **model_config_pb2.DESCRIPTOR.message_types_by_name}
        checked = []

        def compare(m, t):
            checked.append(m.full_name)
            for field in m.fields:
                other = t.fields_by_name.get(field.name)
                self.assertIsNotNone(other, f"{m.full_name}.{field.name}")
                self.assertEqual((field.number, field.type, field.label),
                                 (other.number, other.type, other.label),
                                 f"{m.full_name}.{field.name}")
                if field.message_type is not None:
                    compare(field.message_type, other.message_type)

        for name, message in mine.message_types_by_name.items():
            compare(message, theirs[name])
        for value in mine.enum_types_by_name["DataType"].values:
            self.assertEqual(value.number, model_config_pb2.DataType.Value(value.name))
        methods = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name
        for method in mine.services_by_name["GRPCInferenceService"].methods:
            other = methods[method.name]
            self.assertEqual((method.input_type.full_name, method.output_type.full_name,
                              method.client_streaming, method.server_streaming),
                             (other.input_type.full_name, other.output_type.full_name,
                              other.client_streaming, other.server_streaming))
        self.assertGreater(len(checked), 30)

    def test_health_needs_no_token(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready("deen"))
        self.assertTrue(self.client.is_model_ready("enlm", "1"))
        self.assertFalse(self.client.is_model_ready("enlm", "9"))
        self.assertFalse(self.client.is_model_ready("nosuchmodel"))
        self.assertEqual(self.client.get_server_metadata(as_json=True)["name"], "normserve")

    def test_metadata_declares_each_models_tensors(self):
        self.assertFails("UNAUTHENTICATED", lambda: self.client.get_model_metadata("deen"))
        deen = self.client.get_model_metadata("deen", headers=bearer(INFER), as_json=True)
        self.assertEqual(deen["platform"], "normserve_transformer_mt")
        self.assertEqual(deen["versions"], ["1"])
        self.assertEqual([(t["name"], t["datatype"]) for t in deen["inputs"]],
                         [("TEXT", "BYTES"), ("TARGET", "BYTES")])
        self.assertIn({"name": "TRANSLATION", "datatype": "BYTES", "shape": ["-1", "-1"]},
                      deen["outputs"])
        enlm = self.client.get_model_metadata("enlm", headers=bearer(INFER), as_json=True)
        self.assertEqual([t["name"] for t in enlm["inputs"]], ["TEXT"])
        self.assertIn("GENERATED", [t["name"] for t in enlm["outputs"]])
        config = self.client.get_model_config("enlm", headers=bearer(INFER), as_json=True)
        self.assertTrue(config["config"]["model_transaction_policy"]["decoupled"])
        self.assertFails("NOT_FOUND",
                         lambda: self.client.get_model_metadata("nosuchmodel",
                                                                headers=bearer(INFER)))

    def test_translate_is_normserve_v1s_translate(self):
        result = self.client.infer("deen", [text_input(TEXTS)], headers=bearer(INFER),
                                   parameters={"beam_size": 4, "n_best": 2})
        expected = self.v1.Translate(
            pb.TranslateRequest(model="deen", texts=[t.encode() for t in TEXTS],
                                options=pb.TranslateOptions(beam_size=4, n_best=2)),
            metadata=self.v1_metadata(), timeout=60)
        translations = result.as_numpy("TRANSLATION")
        self.assertEqual(translations.shape, (3, 2))
        self.assertEqual(strings(translations),
                         [h.text for t in expected.translations for h in t.hypotheses])
        np.testing.assert_allclose(result.as_numpy("SCORE").reshape(-1),
                                   [h.score for t in expected.translations for h in t.hypotheses],
                                   rtol=1e-5)
        self.assertEqual(result.get_response().model_name, "deen")
        self.assertEqual(result.get_response().model_version, "1")

    def test_bytes_contents_and_the_raw_form_give_the_same_answer(self):
        def request(raw):
            r = service_pb2.ModelInferRequest(model_name="deen", id="req-7")
            tensor = r.inputs.add(name="TEXT", datatype="BYTES", shape=[len(TEXTS)])
            if raw:
                r.raw_input_contents.append(b"".join(
                    struct.pack("<I", len(t.encode())) + t.encode() for t in TEXTS))
            else:
                tensor.contents.bytes_contents.extend(t.encode() for t in TEXTS)
            r.outputs.add(name="TRANSLATION")
            return self.raw.ModelInfer(r, metadata=self.v1_metadata(), timeout=60)

        contents, raw = request(False), request(True)
        self.assertEqual(contents.raw_output_contents, raw.raw_output_contents)
        self.assertEqual([o.name for o in raw.outputs], ["TRANSLATION"])
        self.assertEqual(raw.id, "req-7")
        # Ragged raw form: the last element claims more bytes than remain.
        broken = service_pb2.ModelInferRequest(model_name="deen")
        broken.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
        broken.raw_input_contents.append(struct.pack("<I", 99) + b"Hallo")
        with self.assertRaises(Exception) as caught:
            self.raw.ModelInfer(broken, metadata=self.v1_metadata(), timeout=60)
        self.assertEqual(caught.exception.code().name, "INVALID_ARGUMENT")
        self.assertIn("says 99 bytes and 5 remain", caught.exception.details())

    def test_requests_that_do_not_parse_or_are_not_utf8_are_invalid_argument(self):
        # Hand-made wire bytes, which protobuf clients refuse to send and a hostile client can:
        # ModelInferRequest{model_name (field 1, a string) = b"\xff\xfe"}.
        infer = channel(self.server.target).unary_unary(
            "/inference.GRPCInferenceService/ModelInfer")
        with self.assertRaises(Exception) as caught:
            infer(b"\x0a\x02\xff\xfe", metadata=self.v1_metadata(), timeout=60)
        self.assertEqual(caught.exception.code().name, "INVALID_ARGUMENT")
        self.assertIn("is not a valid ModelInfer message", caught.exception.details())
        # A BYTES element is a protobuf bytes field: it parses, and normserve.v1 refuses it.
        request = service_pb2.ModelInferRequest(model_name="deen")
        tensor = request.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(b"Gr\xc3")
        with self.assertRaises(Exception) as caught:
            self.raw.ModelInfer(request, metadata=self.v1_metadata(), timeout=60)
        self.assertEqual(caught.exception.code().name, "INVALID_ARGUMENT")
        self.assertIn("is not valid UTF-8 (bad byte at offset 2)", caught.exception.details())

    def test_score_translation_pairs_and_language_model_texts(self):
        result = self.client.infer("deen", [text_input(["Guten Morgen"]),
                                            text_input(["Good morning"], "TARGET")],
                                   headers=bearer(INFER))
        expected = self.v1.Score(
            pb.ScoreRequest(model="deen", pairs=[pb.SourceTarget(source="Guten Morgen".encode(),
                                                                  target=b"Good morning")]),
            metadata=self.v1_metadata(), timeout=60)
        np.testing.assert_allclose(result.as_numpy("LOGPROB"),
                                   [expected.results[0].total_logprob], rtol=1e-6)
        lm = self.client.infer("enlm", [text_input(["the house is big", "big the is house"])],
                               headers=bearer(INFER))
        expected = self.v1.Score(pb.ScoreRequest(model="enlm", texts=[b"the house is big",
                                                                      b"big the is house"]),
                                 metadata=self.v1_metadata(), timeout=60)
        np.testing.assert_allclose(lm.as_numpy("PERPLEXITY"),
                                   [r.perplexity for r in expected.results], rtol=1e-6)
        counts = lm.as_numpy("TOKEN_COUNT")
        self.assertEqual(list(counts), [len(r.tokens) for r in expected.results])
        np.testing.assert_allclose(lm.as_numpy("LOGPROBS")[0][:counts[0]],
                                   [t.logprob for t in expected.results[0].tokens], rtol=1e-6)
        self.assertEqual(strings(lm.as_numpy("TOKENS")[1][:counts[1]]),
                         [t.token for t in expected.results[1].tokens])

    def test_generate_streams_the_same_text_as_normserve_v1(self):
        responses = queue.Queue()
        self.client.start_stream(lambda result, error: responses.put((result, error)),
                                 headers=bearer(INFER))
        try:
            self.client.async_stream_infer("enlm", [text_input(["the house"])],
                                           parameters={"seed": 7, "max_new_tokens": 12,
                                                       "temperature": "0.8"},
                                           request_id="g1")
            pieces, final = [], None
            for _ in range(100):
                result, error = responses.get(timeout=60)
                self.assertIsNone(error)
                response = result.get_response()
                self.assertEqual(response.id, "g1")
                if response.parameters["triton_final_response"].bool_param:
                    final = result
                    break
                pieces.append(strings(result.as_numpy("GENERATED"))[0])
            self.assertIsNotNone(final)
            # A bad request on the same stream is answered with its error; the stream goes on.
            self.client.async_stream_infer("enlm", [text_input(["the"])],
                                           parameters={"top_p": "5"})
            result, error = responses.get(timeout=60)
            self.assertIsNone(result)
            self.assertIn("INVALID_ARGUMENT: top_p", str(error))
        finally:
            self.client.stop_stream()
        expected = list(self.v1.Generate(
            pb.GenerateRequest(model="enlm", prompt=b"the house",
                               options=pb.GenerateOptions(seed=7, max_new_tokens=12,
                                                          temperature=0.8)),
            metadata=self.v1_metadata(), timeout=60))
        self.assertGreater(len(pieces), 1)
        self.assertEqual("".join(pieces), "".join(m.text for m in expected))
        self.assertEqual(strings(final.as_numpy("FINISH_REASON")), [expected[-1].finish_reason])
        self.assertEqual(list(final.as_numpy("TOKEN_COUNT")), [expected[-1].tokens])
        # Unary ModelInfer gathers the whole text.
        whole = self.client.infer("enlm", [text_input(["the house"])], headers=bearer(INFER),
                                  parameters={"task": "generate", "seed": 7,
                                              "max_new_tokens": 12, "temperature": "0.8"})
        self.assertEqual(strings(whole.as_numpy("GENERATED")), ["".join(pieces)])

    def test_errors_are_normserve_v1s(self):
        text = [text_input(["Hallo"])]
        self.assertFails("UNAUTHENTICATED", lambda: self.client.infer("deen", text))
        self.assertFails("UNAUTHENTICATED",
                         lambda: self.client.infer("deen", text, headers=bearer("x" * 32)))
        # Without a token, nothing about the model or the request is told.
        self.assertFails("UNAUTHENTICATED",
                         lambda: self.client.infer("deen", [text_input(["a"], "NOPE")]))
        message = self.assertFails(
            "INVALID_ARGUMENT",
            lambda: self.client.infer("deen", text, headers=bearer(INFER),
                                      parameters={"beam_size": 0}))
        self.assertEqual(message, "beam_size is 0; it must be in 1..64")
        self.assertFails("NOT_FOUND",
                         lambda: self.client.infer("nosuchmodel", text, headers=bearer(INFER)),
                         "available: deen, enlm")
        self.assertFails("INVALID_ARGUMENT",
                         lambda: self.client.infer("deen", text, headers=bearer(INFER),
                                                   priority=9),
                         "priority levels")
        self.assertFails("INVALID_ARGUMENT",
                         lambda: self.client.infer("deen", text, headers=bearer(INFER),
                                                   parameters={"beam": 4}),
                         "parameter 'beam' means nothing")
        self.assertFails("INVALID_ARGUMENT",
                         lambda: self.client.infer("deen", [text_input(["a"], "NOPE")],
                                                   headers=bearer(INFER)),
                         "input 'NOPE' is not an input of this model")
        self.assertFails("INVALID_ARGUMENT",
                         lambda: self.client.infer("enlm", text, headers=bearer(INFER),
                                                   parameters={"task": "translate"}),
                         "language model does score or generate")
        self.assertFails("INVALID_ARGUMENT",
                         lambda: self.client.infer("deen", text, headers=bearer(INFER),
                                                   outputs=[triton.InferRequestedOutput("X")]),
                         "output 'X' is not an output of any request; a translate request has")
        # The timeout parameter (microseconds) is the call's deadline.
        self.assertFails("DEADLINE_EXCEEDED",
                         lambda: self.client.infer("deen", [text_input(["Hallo"] * 64)],
                                                   headers=bearer(INFER), timeout=1))

    def test_calls_count_in_normserve_v1s_metrics(self):
        def translate_ok():
            url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
            for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
                if (line.startswith("normserve_requests_total{") and 'model="deen"' in line
                        and 'rpc="Translate"' in line and 'code="OK"' in line):
                    return float(line.split()[-1])
            return 0.0

        before = translate_ok()
        self.client.infer("deen", [text_input(["Hallo"])], headers=bearer(INFER))
        self.assertEqual(translate_ok(), before + 1)

    def test_repository_index_load_and_unload_need_admin(self):
        index = self.client.get_model_repository_index(headers=bearer(INFER), as_json=True)
        self.assertEqual({m["name"]: m["state"] for m in index["models"]},
                         {"deen": "READY", "enlm": "READY"})
        self.assertFails("PERMISSION_DENIED",
                         lambda: self.client.unload_model("enlm", headers=bearer(INFER)))
        self.client.unload_model("enlm", headers=bearer(ADMIN))
        try:
            self.assertFalse(self.client.is_model_ready("enlm"))
            index = self.client.get_model_repository_index(headers=bearer(ADMIN), as_json=True)
            self.assertIn({"name": "enlm", "state": "UNAVAILABLE", "reason": "unloaded"},
                          index["models"])
            self.assertFails("NOT_FOUND", lambda: self.client.infer(
                "enlm", [text_input(["the"])], headers=bearer(INFER)))
        finally:
            self.client.load_model("enlm", headers=bearer(ADMIN))
        self.assertTrue(self.client.is_model_ready("enlm"))
        self.assertFails("NOT_FOUND",
                         lambda: self.client.load_model("nosuchmodel", headers=bearer(ADMIN)))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
