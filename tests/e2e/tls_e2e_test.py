"""TLS and mutual TLS on the gRPC port of the real normserved, on loopback.

The certificates are made here with openssl: a CA, a server certificate it signs (SAN
127.0.0.1 and localhost), a client certificate it signs, and an unrelated second CA with its
own server certificate. Python's grpc and the real normserve CLI and normserve-bench are the
clients. The server reads a repository with only the translation model, so it starts quickly.
Usage: tls_e2e_test.py NORMSERVED NORMSERVE NORMSERVE_BENCH MODEL_REPOSITORY
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

from grpc_stubs import pb, pb_grpc, health_pb, health_pb_grpc
from normserved_process import NormservedProcess

NORMSERVED, NORMSERVE, BENCH, REPOSITORY = sys.argv[1:5]
SERVING = health_pb.HealthCheckResponse.SERVING
# A refused handshake, or a connection the server closes, fails the call as UNAVAILABLE.
REFUSED = grpc.StatusCode.UNAVAILABLE
REFRESH_SECS = 1


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Certificates:
    """PEM files in a temporary directory, made with openssl (EC P-256: quick)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="normserve-tls-")

    def path(self, name):
        return os.path.join(self.dir, name)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def ca(self, name):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2", "-subj", f"/CN=normserve test {name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=self.dir)

    def leaf(self, name, ca, extensions):
        """name.key and name.crt, signed by ca."""
        with open(self.path(f"{name}.ext"), "w") as f:
            f.write(extensions)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-subj", f"/CN=normserve test {name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=self.dir)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.crt", cwd=self.dir)

    def server(self, name, ca):
        self.leaf(name, ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                            "extendedKeyUsage=serverAuth\n")

    def client(self, name, ca):
        self.leaf(name, ca, "extendedKeyUsage=clientAuth\n")


def make_certificates():
    certs = Certificates()
    certs.ca("ca")
    certs.server("server", "ca")
    certs.client("client", "ca")
    certs.ca("other-ca")
    certs.client("other-client", "other-ca")
    certs.server("other-server", "other-ca")
    return certs


def translation_repository():
    root = tempfile.mkdtemp(prefix="normserve-tls-repo-")
    shutil.copytree(os.path.join(REPOSITORY, "deen"), os.path.join(root, "deen"))
    return root


def tls_channel(target, certs, ca="ca", client=None):
    """A TLS channel trusting certs' ca, with client's certificate when given. Its own
    subchannels: no connection is shared with an earlier channel of other credentials."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.read(f"{ca}.crt"),
        private_key=certs.read(f"{client}.key") if client else None,
        certificate_chain=certs.read(f"{client}.crt") if client else None)
    return grpc.secure_channel(target, credentials, options=[("grpc.use_local_subchannel_pool", 1)])


def plaintext_channel(target):
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def translate(channel):
    request = pb.TranslateRequest(model="deen", texts=[b"Hallo"],
                                  options=pb.TranslateOptions(beam_size=1, max_length_b=3))
    return pb_grpc.NormServeStub(channel).Translate(request, timeout=30)


def health(channel):
    request = health_pb.HealthCheckRequest(service="")
    return health_pb_grpc.HealthStub(channel).Check(request, timeout=10).status


class TlsCase(unittest.TestCase):
    @classmethod
    def server_flags(cls):
        """normserved's flags beyond --tls-cert and --tls-key."""
        return []

    @classmethod
    def setUpClass(cls):
        cls.certs = make_certificates()
        cls.repository = translation_repository()
        cls.normserved = NormservedProcess(
            NORMSERVED, cls.repository, "--threads", "1", "--tls-cert",
            cls.certs.path("server.crt"), "--tls-key", cls.certs.path("server.key"),
            "--tls-refresh-secs", str(REFRESH_SECS), *cls.server_flags())
        cls.target = cls.normserved.target

    @classmethod
    def tearDownClass(cls):
        cls.normserved.stop()
        shutil.rmtree(cls.repository)
        shutil.rmtree(cls.certs.dir)

    def assert_refused(self, channel, call=translate):
        with channel, self.assertRaises(grpc.RpcError) as raised:
            call(channel)
        self.assertEqual(raised.exception.code(), REFUSED, raised.exception.details())

    def assert_translates(self, channel):
        with channel:
            self.assertTrue(translate(channel).translations[0].hypotheses[0].text)

    def cli(self, *args):
        return subprocess.run([NORMSERVE, "--server", self.target, *args], capture_output=True,
                              text=True, timeout=60)


class Tls(TlsCase):
    def test_start_up_log_names_the_transport(self):
        self.assertIn("gRPC transport: TLS", "".join(self.normserved.log))

    def test_client_trusting_the_ca_translates_and_checks_health(self):
        self.assert_translates(tls_channel(self.target, self.certs))
        with tls_channel(self.target, self.certs) as channel:
            self.assertEqual(health(channel), SERVING)

    def test_plaintext_client_fails(self):
        self.assert_refused(plaintext_channel(self.target))
        self.assert_refused(plaintext_channel(self.target), call=health)

    def test_client_trusting_another_ca_fails(self):
        self.assert_refused(tls_channel(self.target, self.certs, ca="other-ca"))

    def test_cli_over_tls(self):
        ca = self.certs.path("ca.crt")
        translated = self.cli("--tls-ca", ca, "translate", "--model", "deen", "Hallo")
        self.assertEqual(translated.returncode, 0, translated.stderr)
        self.assertTrue(translated.stdout.strip())
        # The flags also work after the command, like --server.
        health_check = self.cli("health", "--tls-ca", ca)
        self.assertEqual(health_check.returncode, 0, health_check.stderr)
        self.assertEqual(health_check.stdout.strip(), "SERVING")

    def test_cli_server_name_override(self):
        ca = self.certs.path("ca.crt")
        named = self.cli("--tls-ca", ca, "--tls-server-name", "localhost", "health")
        self.assertEqual(named.returncode, 0, named.stderr)
        # The certificate is not issued to this name: the server is not trusted.
        wrong = self.cli("--tls-ca", ca, "--tls-server-name", "elsewhere.example", "health")
        self.assertEqual(wrong.returncode, 1, wrong.stdout)
        self.assertIn("UNAVAILABLE", wrong.stderr)

    def test_cli_failures(self):
        plaintext = self.cli("health")
        self.assertEqual(plaintext.returncode, 1)
        self.assertIn("UNAVAILABLE", plaintext.stderr)
        wrong_ca = self.cli("--tls-ca", self.certs.path("other-ca.crt"), "health")
        self.assertEqual(wrong_ca.returncode, 1)
        self.assertIn("UNAVAILABLE", wrong_ca.stderr)
        missing = self.cli("--tls-ca", self.certs.path("absent.crt"), "health")
        self.assertEqual(missing.returncode, 1)
        self.assertIn("absent.crt", missing.stderr)
        half = self.cli("--tls-ca", self.certs.path("ca.crt"), "--tls-cert",
                        self.certs.path("client.crt"), "health")
        self.assertEqual(half.returncode, 2)
        self.assertIn("--tls-cert and --tls-key go together", half.stderr)

    def test_bench_over_tls(self):
        bench = subprocess.run(
            [BENCH, "--server", self.target, "--model", "deen", "--tls-ca",
             self.certs.path("ca.crt"), "--concurrency", "1", "--requests", "2",
             "--warmup-secs", "0"], capture_output=True, text=True, timeout=120)
        self.assertEqual(bench.returncode, 0, bench.stderr)
        plaintext = subprocess.run(
            [BENCH, "--server", self.target, "--model", "deen", "--concurrency", "1",
             "--requests", "2", "--warmup-secs", "0"], capture_output=True, text=True,
            timeout=120)
        self.assertEqual(plaintext.returncode, 1, plaintext.stdout)
        self.assertIn("UNAVAILABLE", plaintext.stderr)


class MutualTls(TlsCase):
    @classmethod
    def server_flags(cls):
        return ["--tls-client-ca", cls.certs.path("ca.crt")]

    def test_start_up_log_names_the_transport(self):
        self.assertIn("gRPC transport: mutual TLS", "".join(self.normserved.log))

    def test_client_with_a_certificate_of_the_client_ca_translates(self):
        self.assert_translates(tls_channel(self.target, self.certs, client="client"))
        with tls_channel(self.target, self.certs, client="client") as channel:
            self.assertEqual(health(channel), SERVING)

    def test_client_without_a_certificate_fails(self):
        self.assert_refused(tls_channel(self.target, self.certs))
        self.assert_refused(tls_channel(self.target, self.certs), call=health)

    def test_client_certificate_of_another_ca_fails(self):
        self.assert_refused(tls_channel(self.target, self.certs, client="other-client"))

    def test_cli_with_a_client_certificate(self):
        flags = ["--tls-ca", self.certs.path("ca.crt")]
        without = self.cli(*flags, "health")
        self.assertEqual(without.returncode, 1)
        self.assertIn("UNAVAILABLE", without.stderr)
        flags += ["--tls-cert", self.certs.path("client.crt"),
                  "--tls-key", self.certs.path("client.key")]
        with_certificate = self.cli(*flags, "translate", "--model", "deen", "Hallo")
        self.assertEqual(with_certificate.returncode, 0, with_certificate.stderr)
        self.assertTrue(with_certificate.stdout.strip())


class Rotation(TlsCase):
    def test_replaced_files_are_served_without_a_restart(self):
        self.assert_translates(tls_channel(self.target, self.certs))
        self.assert_refused(tls_channel(self.target, self.certs, ca="other-ca"))
        # Replace key and certificate (each by a rename, as a Kubernetes Secret volume or a
        # certificate tool does) with a pair signed by the other CA.
        for suffix in ("key", "crt"):
            staged = self.certs.path(f"staged.{suffix}")
            shutil.copy(self.certs.path(f"other-server.{suffix}"), staged)
            os.replace(staged, self.certs.path(f"server.{suffix}"))
        # Bounded: the server re-reads the files every REFRESH_SECS.
        rotated = False
        for _ in range(60):
            try:
                with tls_channel(self.target, self.certs, ca="other-ca") as channel:
                    translate(channel)
                rotated = True
                break
            except grpc.RpcError as error:
                self.assertEqual(error.code(), REFUSED, error.details())
                time.sleep(0.5)
        self.assertTrue(rotated, "the server still presents the old certificate")
        self.assert_refused(tls_channel(self.target, self.certs, ca="ca"))
        self.assertIsNone(self.normserved.process.poll())


class StartUpErrors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = make_certificates()
        with open(cls.certs.path("garbage.pem"), "w") as f:
            f.write("not a certificate\n")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certs.dir)

    def start(self, *flags):
        return subprocess.run(
            [NORMSERVED, "--model-repository", REPOSITORY, "--grpc-address", "127.0.0.1:0",
             "--metrics-address", "127.0.0.1:0", *flags],
            capture_output=True, text=True, timeout=120)

    def assert_start_fails(self, flags, names, exit_code=1):
        started = self.start(*flags)
        self.assertEqual(started.returncode, exit_code, started.stderr)
        for name in names:
            self.assertIn(name, started.stderr)

    def test_bad_files_stop_the_start(self):
        p = self.certs.path
        self.assert_start_fails(["--tls-cert", p("absent.crt"), "--tls-key", p("server.key")],
                                ["--tls-cert", p("absent.crt"), "cannot open"])
        self.assert_start_fails(["--tls-cert", p("garbage.pem"), "--tls-key", p("server.key")],
                                ["--tls-cert", p("garbage.pem"), "no PEM certificate"])
        self.assert_start_fails(["--tls-cert", p("server.crt"), "--tls-key", p("garbage.pem")],
                                ["--tls-key", p("garbage.pem"), "private key"])
        self.assert_start_fails(["--tls-cert", p("server.crt"), "--tls-key", p("client.key")],
                                [p("client.key"), "is not the private key"])
        self.assert_start_fails(["--tls-cert", p("server.crt"), "--tls-key", p("server.key"),
                                 "--tls-client-ca", p("garbage.pem")],
                                ["--tls-client-ca", p("garbage.pem")])

    def test_flags_that_do_not_fit_together(self):
        p = self.certs.path
        self.assert_start_fails(["--tls-cert", p("server.crt")], ["--tls-key"], exit_code=2)
        self.assert_start_fails(["--tls-client-ca", p("ca.crt")], ["--tls-cert"], exit_code=2)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
