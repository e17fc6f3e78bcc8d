"""The model lifecycle of the real normserved, seen through a real gRPC client.

A repository copy holds a good model and a model whose only version is broken (its weights
truncated); the server runs with --model-control explicit. Health says exactly which model
serves, an unloaded model is NOT_FOUND with the reason, and LoadModel brings it back.
Usage: lifecycle_e2e_test.py NORMSERVED MODEL_REPOSITORY
"""
import os
import shutil
import sys
import tempfile
import unittest

import grpc

from grpc_stubs import pb, pb_grpc, health_pb, health_pb_grpc, channel
from normserved_process import NormservedProcess

NORMSERVED, REPOSITORY = sys.argv[1:3]
SERVING = health_pb.HealthCheckResponse.SERVING
NOT_SERVING = health_pb.HealthCheckResponse.NOT_SERVING


class Lifecycle(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="normserve-lifecycle-")
        shutil.copytree(os.path.join(REPOSITORY, "deen"), os.path.join(cls.root, "deen"))
        broken = os.path.join(cls.root, "broken", "1")
        shutil.copytree(os.path.join(REPOSITORY, "deen", "1"), broken)
        with open(os.path.join(broken, "model.safetensors"), "r+b") as weights:
            weights.truncate(1000)
        cls.normserved = NormservedProcess(NORMSERVED, cls.root, "--model-control", "explicit",
                                           "--allow-unauthenticated-admin",
                                           "--threads", "2")
        cls.channel = channel(cls.normserved.target)
        cls.stub = pb_grpc.NormServeStub(cls.channel)
        cls.health_stub = health_pb_grpc.HealthStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.normserved.stop()
        shutil.rmtree(cls.root)

    def health(self, service):
        request = health_pb.HealthCheckRequest(service=service)
        return self.health_stub.Check(request, timeout=10).status

    def translate(self, model):
        request = pb.TranslateRequest(model=model, texts=[b"Hallo"],
                                      options=pb.TranslateOptions(beam_size=1, max_length_b=3))
        return self.stub.Translate(request, timeout=60)

    def translate_error(self, model):
        with self.assertRaises(grpc.RpcError) as raised:
            self.translate(model)
        return raised.exception

    def model(self, name):
        return self.stub.GetModel(pb.GetModelRequest(model=name), timeout=10)

    def test_health_unload_and_load(self):
        self.assertEqual(self.health("deen"), SERVING)
        self.assertEqual(self.health("broken"), NOT_SERVING)
        self.assertEqual(self.health(""), SERVING)
        self.assertEqual(self.health("normserve.v1.NormServe"), SERVING)

        broken = self.model("broken")
        self.assertEqual(broken.state, pb.MODEL_STATE_FAILED)
        self.assertIn("model.safetensors", broken.error)
        failed = self.translate_error("broken")
        self.assertEqual(failed.code(), grpc.StatusCode.FAILED_PRECONDITION, failed.details())
        self.assertIn("model.safetensors", failed.details())

        self.stub.UnloadModel(pb.UnloadModelRequest(model="deen"), timeout=60)
        self.assertEqual(self.health("deen"), NOT_SERVING)
        self.assertEqual(self.health("broken"), NOT_SERVING)
        self.assertEqual(self.health(""), NOT_SERVING)  # nothing serves now
        self.assertEqual(self.model("deen").state, pb.MODEL_STATE_UNLOADED)
        unloaded = self.translate_error("deen")
        self.assertEqual(unloaded.code(), grpc.StatusCode.NOT_FOUND, unloaded.details())
        self.assertIn("unloaded", unloaded.details())

        info = self.stub.LoadModel(pb.LoadModelRequest(model="deen"), timeout=120)
        self.assertEqual(info.state, pb.MODEL_STATE_READY)
        self.assertEqual(self.health("deen"), SERVING)
        self.assertEqual(self.health(""), SERVING)
        self.assertEqual(self.health("broken"), NOT_SERVING)
        self.assertEqual(self.translate("deen").model, "deen")

        reloaded = None
        with self.assertRaises(grpc.RpcError) as raised:
            reloaded = self.stub.LoadModel(pb.LoadModelRequest(model="broken"), timeout=120)
        self.assertIsNone(reloaded)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("model.safetensors", raised.exception.details())
        self.assertEqual(self.health("broken"), NOT_SERVING)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
