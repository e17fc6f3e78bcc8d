"""Confinement and bounds of the real normserved (issue #13): a model repository cannot make
the server read files outside a model's version directory, and user input is bounded and
echoed only truncated. Run with Debian's /usr/bin/python3 (tests/e2e/grpc_stubs.py).

Usage: confinement_e2e_test.py NORMSERVED MODEL_REPOSITORY
"""
import json
import os
import shutil
import sys
import tempfile
import unittest

import grpc

from grpc_stubs import channel, pb, pb_grpc, stub
from normserved_process import NormservedProcess

NORMSERVED, REPOSITORY = sys.argv[1:3]


class Confinement(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="normserve-confinement-")
        repo = os.path.join(cls.work, "repo")
        outside = os.path.join(cls.work, "outside")
        os.makedirs(outside)
        shutil.copytree(os.path.join(REPOSITORY, "deen"), os.path.join(repo, "deen"))
        # A model directory that is a link to a model elsewhere.
        shutil.copytree(os.path.join(REPOSITORY, "enlm"), os.path.join(outside, "enlm"))
        os.symlink(os.path.join(outside, "enlm"), os.path.join(repo, "linked"))
        # A version directory that is a link.
        os.makedirs(os.path.join(repo, "linkedversion"))
        os.symlink(os.path.join(outside, "enlm", "1"), os.path.join(repo, "linkedversion", "1"))
        # A tokenizer file that is a link to a file outside the version directory.
        shutil.copytree(os.path.join(REPOSITORY, "deen"), os.path.join(repo, "linkedfile"))
        spm = os.path.join(repo, "linkedfile", "1", "source.spm")
        shutil.move(spm, os.path.join(outside, "source.spm"))
        os.symlink(os.path.join(outside, "source.spm"), spm)
        # A config whose tokenizer path climbs out with "../".
        shutil.copytree(os.path.join(REPOSITORY, "deen"), os.path.join(repo, "dotdot"))
        config_path = os.path.join(repo, "dotdot", "1", "config.json")
        with open(config_path) as f:
            config = json.load(f)
        config["tokenizer"]["source"] = "../../deen/1/source.spm"
        with open(config_path, "w") as f:
            json.dump(config, f)
        cls.normserved = NormservedProcess(NORMSERVED, repo, "--threads", "1",
                                           "--max-tokens-per-request", "40")
        cls.client = stub(cls.normserved.target)

    @classmethod
    def tearDownClass(cls):
        cls.normserved.stop()
        shutil.rmtree(cls.work, ignore_errors=True)

    def model(self, name):
        return self.client.GetModel(pb.GetModelRequest(model=name), timeout=30)

    def assert_refused(self, name, reason):
        info = self.model(name)
        self.assertFalse(info.ready, info)
        self.assertEqual(info.state, pb.MODEL_STATE_FAILED, info)
        self.assertIn(reason, info.error)
        with self.assertRaises(grpc.RpcError) as raised:
            self.client.Score(pb.ScoreRequest(model=name, texts=[b"the house"]), timeout=30)
        self.assertNotEqual(raised.exception.code(), grpc.StatusCode.OK)

    def test_a_model_directory_that_is_a_link_is_refused(self):
        self.assert_refused("linked", "the model directory is a symbolic link")

    def test_a_version_directory_that_is_a_link_is_refused(self):
        self.assert_refused("linkedversion", "the version directory is a symbolic link")

    def test_a_file_that_links_outside_the_version_directory_is_refused(self):
        self.assert_refused("linkedfile", "outside its version directory")

    def test_a_config_path_that_climbs_out_is_refused(self):
        self.assert_refused("dotdot", "source")
        self.assertIn("must be a file name inside the version directory",
                      self.model("dotdot").error)

    def test_the_intact_model_serves(self):
        reply = self.client.Translate(pb.TranslateRequest(model="deen", texts=[b"Guten Morgen"]),
                                      timeout=30)
        self.assertEqual(len(reply.translations), 1)

    def test_a_10kb_model_name_is_invalid_argument_and_echoed_truncated(self):
        name = "m" * 10240
        for call in (lambda: self.client.Translate(pb.TranslateRequest(model=name, texts=[b"x"]),
                                                   timeout=30),
                     lambda: self.client.GetModel(pb.GetModelRequest(model=name), timeout=30)):
            with self.assertRaises(grpc.RpcError) as raised:
                call()
            self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            details = raised.exception.details()
            self.assertIn("... (10240 bytes)", details)
            self.assertLess(len(details), 1024, details)

    def test_a_path_as_model_name_is_invalid_argument(self):
        for name in ["../deen", "deen/1", "/etc"]:
            with self.assertRaises(grpc.RpcError) as raised:
                self.client.GetModel(pb.GetModelRequest(model=name), timeout=30)
            self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, name)

    def test_too_many_tokens_in_one_request_name_the_limit(self):
        with self.assertRaises(grpc.RpcError) as raised:
            self.client.Translate(pb.TranslateRequest(
                model="deen", texts=[b"Guten Morgen, wie geht es dir heute?"] * 8), timeout=30)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("--max-tokens-per-request", raised.exception.details())

    def test_oversized_metadata_is_refused_and_the_server_keeps_serving(self):
        # A connection of its own (channels of one process otherwise share one): gRPC may close
        # the offending client's connection, and the other clients must not notice.
        offender = pb_grpc.NormServeStub(
            channel(self.normserved.target, **{"grpc.use_local_subchannel_pool": 1}))
        with self.assertRaises(grpc.RpcError) as raised:
            offender.Translate(pb.TranslateRequest(model="deen", texts=[b"Hallo"]),
                               metadata=[("x-padding", "p" * 32768)], timeout=30)
        self.assertNotEqual(raised.exception.code(), grpc.StatusCode.OK)
        self.test_the_intact_model_serves()
        self.assertIsNone(self.normserved.process.poll())


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
