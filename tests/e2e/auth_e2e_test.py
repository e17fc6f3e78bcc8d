"""Token authentication of the real normserved, seen through a real gRPC client and the CLIs.

The server runs with a tokens file (one infer and one admin token) and --model-control
explicit. Every NormServe RPC without a token or with a wrong one is UNAUTHENTICATED, the admin
RPCs with the infer token PERMISSION_DENIED, with the admin token OK; ModelInfo.path only
reaches admin callers; health needs no token; no error message and no log line carries a
token; a rewritten tokens file takes effect without a restart (a broken one keeps the tokens
in use); the server refuses to start with admin RPCs but nobody to authorize them.
Usage: auth_e2e_test.py NORMSERVED NORMSERVE NORMSERVE_BENCH MODEL_REPOSITORY
"""
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

from grpc_stubs import pb, pb_grpc, health_pb, health_pb_grpc, channel
from normserved_process import NormservedProcess

NORMSERVED, NORMSERVE, BENCH, REPOSITORY = sys.argv[1:5]
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
RELOAD_POLLS = 100  # of 0.1 s: the server looks at the file once per second


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def replace(path, text):
    """A new file renamed over the old one, as README advises: never read half-written."""
    write(path + ".new", text)
    os.replace(path + ".new", path)


def bearer(token):
    return [("authorization", "Bearer " + token)]


# Every RPC of normserve.v1.NormServe, as a call with the given metadata.
def calls(stub):
    return {
        "Translate": lambda md: stub.Translate(
            pb.TranslateRequest(model="deen", texts=[b"Hallo"],
                                options=pb.TranslateOptions(beam_size=1, max_length_b=3)),
            metadata=md, timeout=60),
        "Score": lambda md: stub.Score(pb.ScoreRequest(model="enlm", texts=[b"hello world"]),
                                       metadata=md, timeout=60),
        "Generate": lambda md: list(stub.Generate(
            pb.GenerateRequest(model="enlm", prompt=b"the",
                               options=pb.GenerateOptions(max_new_tokens=2, seed=1)),
            metadata=md, timeout=60)),
        "ListModels": lambda md: stub.ListModels(pb.ListModelsRequest(), metadata=md, timeout=10),
        "GetModel": lambda md: stub.GetModel(pb.GetModelRequest(model="deen"), metadata=md,
                                             timeout=10),
        "LoadModel": lambda md: stub.LoadModel(pb.LoadModelRequest(model="deen"), metadata=md,
                                               timeout=120),
        "UnloadModel": lambda md: stub.UnloadModel(pb.UnloadModelRequest(model="nosuchmodel"),
                                                   metadata=md, timeout=60),
    }


def start_args(*flags):
    return [NORMSERVED, "--model-repository", REPOSITORY, "--grpc-address", "127.0.0.1:0",
            "--metrics-address", "127.0.0.1:0", "--threads", "2", *flags]


def reflection_list(target):
    """A raw ServerReflectionInfo call asking for the service list (list_services = "")."""
    with grpc.insecure_channel(target) as ch:
        method = ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                  request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
        return list(method(iter([b"\x3a\x00"]), timeout=10))


class AuthEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="normserve-auth-")
        cls.infer = "infer-" + secrets.token_hex(16)
        cls.admin = "admin-" + secrets.token_hex(16)
        cls.tokens_file = os.path.join(cls.dir, "tokens")
        write(cls.tokens_file, cls.tokens(cls.infer))
        cls.normserved = NormservedProcess(NORMSERVED, REPOSITORY, "--model-control", "explicit",
                                           "--auth-tokens-file", cls.tokens_file,
                                           "--threads", "2")
        cls.channel = channel(cls.normserved.target)
        cls.stub = pb_grpc.NormServeStub(cls.channel)
        cls.calls = calls(cls.stub)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.normserved.stop()
        shutil.rmtree(cls.dir)

    @classmethod
    def tokens(cls, infer_token):
        return f"# normserve tokens\ninfer {infer_token}\nadmin {cls.admin}\n"

    def token_file(self, token):
        path = os.path.join(self.dir, "client-" + secrets.token_hex(4))
        write(path, token + "\n")
        return path

    def assertCode(self, call, metadata, code):
        with self.assertRaises(grpc.RpcError) as raised:
            call(metadata)
        error = raised.exception
        self.assertEqual(error.code(), code, error.details())
        for token in (self.infer, self.admin):
            self.assertNotIn(token, error.details())
        return error.details()

    def test_every_rpc_without_a_token_or_with_a_wrong_one_is_unauthenticated(self):
        wrong = "wrong-" + secrets.token_hex(16)
        for name, call in self.calls.items():
            with self.subTest(rpc=name):
                details = self.assertCode(call, [], UNAUTHENTICATED)
                self.assertIn("authorization: Bearer <token>", details)
                details = self.assertCode(call, bearer(wrong), UNAUTHENTICATED)
                self.assertNotIn(wrong, details)
                # The token without its scheme, and a token that only extends a valid one.
                details = self.assertCode(call, [("authorization", self.infer)], UNAUTHENTICATED)
                self.assertIn("'Bearer <token>'", details)
                self.assertCode(call, bearer(self.admin + "x"), UNAUTHENTICATED)

    def test_the_infer_token_serves_inference_but_not_the_admin_rpcs(self):
        for name in ("Translate", "Score", "Generate", "ListModels", "GetModel"):
            with self.subTest(rpc=name):
                self.calls[name](bearer(self.infer))
        for name in ("LoadModel", "UnloadModel"):
            with self.subTest(rpc=name):
                details = self.assertCode(self.calls[name], bearer(self.infer), PERMISSION_DENIED)
                self.assertIn("scope admin", details)

    def test_the_admin_token_unloads_and_loads(self):
        admin = bearer(self.admin)
        self.stub.UnloadModel(pb.UnloadModelRequest(model="enlm"), metadata=admin, timeout=60)
        info = self.stub.GetModel(pb.GetModelRequest(model="enlm"), metadata=admin, timeout=10)
        self.assertEqual(info.state, pb.MODEL_STATE_UNLOADED)
        info = self.stub.LoadModel(pb.LoadModelRequest(model="enlm"), metadata=admin, timeout=120)
        self.assertTrue(info.ready)
        self.assertTrue(info.path.endswith(os.path.join("enlm", "1")), info.path)
        # The admin token also has infer.
        self.stub.Score(pb.ScoreRequest(model="enlm", texts=[b"hello"]), metadata=admin,
                        timeout=60)

    def test_model_paths_reach_admin_callers_only(self):
        infer_view = self.stub.GetModel(pb.GetModelRequest(model="deen"),
                                        metadata=bearer(self.infer), timeout=10)
        self.assertTrue(infer_view.ready)
        self.assertEqual(infer_view.path, "")
        admin_view = self.stub.GetModel(pb.GetModelRequest(model="deen"),
                                        metadata=bearer(self.admin), timeout=10)
        self.assertTrue(admin_view.path.startswith(REPOSITORY), admin_view.path)
        listed = self.stub.ListModels(pb.ListModelsRequest(), metadata=bearer(self.infer),
                                      timeout=10)
        self.assertEqual([m.path for m in listed.models], ["", ""])
        listed = self.stub.ListModels(pb.ListModelsRequest(), metadata=bearer(self.admin),
                                      timeout=10)
        self.assertTrue(all(m.path for m in listed.models))

    def test_health_needs_no_token_and_reflection_is_off(self):
        health = health_pb_grpc.HealthStub(self.channel)
        response = health.Check(health_pb.HealthCheckRequest(service="deen"), timeout=10)
        self.assertEqual(response.status, health_pb.HealthCheckResponse.SERVING)
        with self.assertRaises(grpc.RpcError) as raised:
            reflection_list(self.normserved.target)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_a_rewritten_tokens_file_takes_effect_without_restart(self):
        def infer_works(token):
            try:
                self.calls["ListModels"](bearer(token))
                return True
            except grpc.RpcError as e:
                self.assertEqual(e.code(), UNAUTHENTICATED, e.details())
                return False

        def wait_for(condition, what):
            for _ in range(RELOAD_POLLS):
                if condition():
                    return
                time.sleep(0.1)
            self.fail(f"{what}; server log:\n" + "".join(self.normserved.log))

        rotated = "rotated-" + secrets.token_hex(20)
        try:
            # A broken file is refused and the tokens in use stay.
            replace(self.tokens_file, f"infer {rotated}\nadmin short\n")
            # The server looks at the file when a call comes.
            wait_for(lambda: infer_works(self.infer) and
                     any("stay in use" in line for line in self.normserved.log),
                     "the server to report the broken tokens file")
            self.assertTrue(infer_works(self.infer))
            self.assertFalse(infer_works(rotated))
            # Rewritten in place (the file, not a new one) with a new infer token: the new one
            # works, the old one not.
            write(self.tokens_file, self.tokens(rotated))
            wait_for(lambda: infer_works(rotated), "the rotated token to work")
            self.assertFalse(infer_works(self.infer))
        finally:
            replace(self.tokens_file, self.tokens(self.infer))
            wait_for(lambda: infer_works(self.infer), "the first token to work again")
        log = "".join(self.normserved.log)
        self.assertIn("re-read", log)
        for token in (self.infer, self.admin, rotated):
            self.assertNotIn(token, log)

    def test_the_cli_and_the_load_generator_send_the_token_file(self):
        server = ["--server", self.normserved.target]
        infer_file, admin_file = self.token_file(self.infer), self.token_file(self.admin)

        def cli(*args):
            return subprocess.run([NORMSERVE, *server, *args], capture_output=True, text=True,
                                  timeout=120)

        out = cli("--token-file", infer_file, "translate", "--model", "deen", "Guten Morgen")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(out.stdout.strip())
        out = cli("models")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("UNAUTHENTICATED", out.stderr)
        out = cli("--token-file", infer_file, "unload", "enlm")
        self.assertIn("PERMISSION_DENIED", out.stderr)
        out = cli("--token-file", admin_file, "load", "enlm")
        self.assertEqual(out.returncode, 0, out.stderr)
        out = cli("--token-file", os.path.join(self.dir, "missing"), "models")
        self.assertEqual(out.returncode, 2)
        self.assertIn("--token-file", out.stderr)

        bench = [BENCH, *server, "--model", "deen", "--concurrency", "1", "--requests", "3",
                 "--warmup-secs", "0"]
        out = subprocess.run([*bench, "--token-file", infer_file], capture_output=True,
                             text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        out = subprocess.run(bench, capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 1)
        self.assertIn("UNAUTHENTICATED", out.stderr)


class StartUp(unittest.TestCase):
    """What the server accepts at start: admin RPCs need someone who may call them."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="normserve-auth-start-")
        self.tokens_file = os.path.join(self.dir, "tokens")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def refused(self, *flags):
        out = subprocess.run(start_args(*flags), capture_output=True, text=True, timeout=60)
        self.assertNotEqual(out.returncode, 0, out.stderr)
        return out.stderr

    def test_explicit_model_control_without_an_admin_token_refuses_to_start(self):
        stderr = self.refused("--model-control", "explicit")
        self.assertIn("--allow-unauthenticated-admin", stderr)
        secret = "only-infer-" + secrets.token_hex(16)
        write(self.tokens_file, f"infer {secret}\n")
        stderr = self.refused("--model-control", "explicit", "--auth-tokens-file", self.tokens_file)
        self.assertIn("admin token", stderr)
        self.assertNotIn(secret, stderr)

    def test_a_broken_tokens_file_refuses_to_start_without_echoing_it(self):
        write(self.tokens_file, "infer " + "x" * 20 + "\nadmin tooshort-secret\n")
        stderr = self.refused("--auth-tokens-file", self.tokens_file)
        self.assertIn("line 2", stderr)
        self.assertNotIn("tooshort-secret", stderr)
        stderr = self.refused("--auth-tokens-file", os.path.join(self.dir, "missing"))
        self.assertIn("missing", stderr)

    def test_unauthenticated_admin_is_for_servers_without_tokens(self):
        write(self.tokens_file, "admin " + secrets.token_hex(16) + "\n")
        stderr = self.refused("--allow-unauthenticated-admin", "--auth-tokens-file",
                              self.tokens_file)
        self.assertIn("--allow-unauthenticated-admin", stderr)

    def test_unauthenticated_admin_starts_with_a_warning_and_opens_admin(self):
        server = NormservedProcess(NORMSERVED, REPOSITORY, "--model-control", "explicit",
                                   "--allow-unauthenticated-admin", "--threads", "2")
        try:
            log = "".join(server.log)
            self.assertIn("warning: no --auth-tokens-file", log)
            self.assertIn("every caller can also load and unload models", log)
            with channel(server.target) as ch:
                stub = pb_grpc.NormServeStub(ch)
                info = stub.LoadModel(pb.LoadModelRequest(model="enlm"), timeout=120)
                self.assertTrue(info.path)
                # Without tokens reflection is served.
                self.assertTrue(reflection_list(server.target))
        finally:
            server.stop()

    def test_enable_reflection_serves_it_with_tokens(self):
        token = secrets.token_hex(16)
        write(self.tokens_file, f"infer {token}\n")
        server = NormservedProcess(NORMSERVED, REPOSITORY, "--auth-tokens-file",
                                   self.tokens_file, "--enable-reflection", "--threads", "2")
        try:
            self.assertTrue(reflection_list(server.target))
            with channel(server.target) as ch:
                stub = pb_grpc.NormServeStub(ch)
                # Without --model-control explicit the admin RPCs do nothing: still, the token
                # comes first.
                with self.assertRaises(grpc.RpcError) as raised:
                    stub.LoadModel(pb.LoadModelRequest(model="enlm"), timeout=10)
                self.assertEqual(raised.exception.code(), UNAUTHENTICATED)
                with self.assertRaises(grpc.RpcError) as raised:
                    stub.LoadModel(pb.LoadModelRequest(model="enlm"), metadata=bearer(token),
                                   timeout=10)
                self.assertEqual(raised.exception.code(), PERMISSION_DENIED)
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
