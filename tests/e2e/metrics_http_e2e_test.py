"""The real normserved's metrics port against stray, malformed, oversized and half-open HTTP
clients: each gets its status code or a closed connection, the process lives on, and a scrape
still answers while half-open connections hold the port.

Usage: metrics_http_e2e_test.py NORMSERVED MODEL_REPOSITORY
"""
import http.client
import socket
import struct
import sys
import unittest

from grpc_stubs import pb, stub
from normserved_process import NormservedProcess

NORMSERVED, REPOSITORY = sys.argv[1:3]
# Prometheus' default scrape timeout; also the bound on every socket operation here.
SCRAPE_TIMEOUT_SECS = 10
# A connection the server must drop (half-open, refused) ends long before this.
DROP_WAIT_SECS = 60


class MetricsHttp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.normserved = NormservedProcess(NORMSERVED, REPOSITORY)
        cls.port = cls.normserved.metrics_port
        # One finished RPC, so that normserve_requests_total has a sample to export.
        stub(cls.normserved.target).Translate(pb.TranslateRequest(model="deen", texts=[b"Hallo"]),
                                              timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.normserved.stop()

    def assertAlive(self, after):
        self.assertIsNone(self.normserved.process.poll(),
                          f"normserved exited after {after}:\n" + "".join(self.normserved.log))

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=SCRAPE_TIMEOUT_SECS)

    def request(self, method, path, body=None):
        """Status, headers and body of one request on its own connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port,
                                                timeout=SCRAPE_TIMEOUT_SECS)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, response, response.read().decode()
        finally:
            connection.close()

    def raw_status(self, data):
        """The status code answering raw bytes, or None when the server closes without one."""
        with self.connect() as sock:
            sock.sendall(data)
            head = b""
            while b"\r\n" not in head:
                try:
                    chunk = sock.recv(4096)
                except ConnectionResetError:
                    return None
                if not chunk:
                    return None
                head += chunk
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.assertRegex(status_line, r"^HTTP/1\.[01] \d{3} ")
            return int(status_line.split()[1])

    def scrape(self):
        status, response, body = self.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(response.getheader("Content-Type"), "text/plain; version=0.0.4")
        self.assertIn("normserve_requests_total", body)
        return body

    def test_metrics_answers_get_and_head(self):
        self.scrape()
        status, response, body = self.request("HEAD", "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(body, "")
        self.assertGreater(int(response.getheader("Content-Length")), 0)
        self.assertAlive("GET and HEAD /metrics")

    def test_other_paths_are_not_found(self):
        for method, path in [("GET", "/"), ("GET", "/favicon.ico"), ("HEAD", "/"),
                             ("GET", "/metrics/"), ("POST", "/")]:
            with self.subTest(method=method, path=path):
                status, _, body = self.request(method, path)
                self.assertEqual(status, 404)
                if method != "HEAD":
                    self.assertIn("/metrics", body)
                self.assertAlive(f"{method} {path}")

    def test_other_methods_on_metrics_are_not_allowed(self):
        for method, body in [("POST", "x=1"), ("PUT", "x"), ("DELETE", None), ("OPTIONS", None)]:
            with self.subTest(method=method):
                status, response, text = self.request(method, "/metrics", body)
                self.assertEqual(status, 405)
                self.assertEqual(response.getheader("Allow"), "GET, HEAD")
                self.assertIn("GET and HEAD", text)
                self.assertAlive(f"{method} /metrics")

    def test_oversized_requests_are_refused(self):
        cases = {
            "an 8 KB path": b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            "a 64 KB header": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 65536
                              + b"\r\n\r\n",
            # Each line is short; together they are 100 KB.
            "100 headers of 1 KB": b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                   + b"".join(b"X-%d: %s\r\n" % (i, b"c" * 1024)
                                              for i in range(100)) + b"\r\n",
            # Refused unread; the rest of the connection is then over its byte budget.
            "a 1 MB body": b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"
                           + b"d" * 1048576,
        }
        expected = {"an 8 KB path": 414, "a 64 KB header": 400, "100 headers of 1 KB": 400,
                    "a 1 MB body": 405}
        for name, data in cases.items():
            with self.subTest(name):
                try:
                    status = self.raw_status(data)
                except (BrokenPipeError, ConnectionResetError):
                    status = None  # closed while we were still sending: refused as well
                self.assertIn(status, (expected[name], None))
                self.assertAlive(name)
        self.scrape()

    def test_garbage_is_refused_or_dropped(self):
        cases = {
            "binary bytes": bytes(range(256)) * 4,
            "a TLS client hello": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 32
                                  + b"\r\n\r\n",
            "a bare line": b"hello\r\n\r\n",
            "an unknown method": b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assertIn(self.raw_status(data), (400, None))
                self.assertAlive(name)
        self.scrape()

    def test_clients_that_vanish_mid_request(self):
        with self.connect() as sock:
            sock.sendall(b"GET /metr")
        self.assertAlive("a connection closed in the request line")
        with self.connect() as sock:
            sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        self.assertAlive("a connection closed in the body")
        # A full request, then a reset before the response: the server writes to a dead peer.
        with self.connect() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertAlive("a reset before the response")
        self.scrape()

    def test_scrape_answers_while_half_open_connections_wait(self):
        half_open = []
        try:
            for _ in range(8):
                sock = self.connect()
                sock.sendall(b"GET /metrics HT")
                half_open.append(sock)
            self.scrape()
            self.assertAlive("a scrape beside 8 half-open connections")
            # The server drops them: each ends without a response.
            for sock in half_open:
                sock.settimeout(DROP_WAIT_SECS)
                self.assertEqual(sock.recv(4096), b"")
        finally:
            for sock in half_open:
                sock.close()
        self.assertAlive("8 half-open connections")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
