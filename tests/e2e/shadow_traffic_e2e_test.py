"""Shadow traffic on a real normserved (issue #17).

Variant group "lm": the bundled enlm (LayerNorm) and, as its shadow with fraction 1, enlm
converted at load to its lossless Pre-RMSNorm equivalent. Variant group "mt": deen and a copy of
it as a shadow with fraction 0.5. Clients call the groups; the test checks that
- every answer comes from the primary, never the shadow, and the group answers as before;
- copies run after the answers: normserve_shadow_requests_total counts them by outcome, the
  agreement of Translate and Generate is 1 (same outputs) and Score's mean log-prob difference
  is below 1e-4, all labelled by primary, shadow, norm and RPC;
- about half of mt's requests are copied (fraction 0.5), and the shadow model still answers
  calls that name it;
- normserve-bench drives a group by its name (it learns the architecture from a member).

Usage: shadow_traffic_e2e_test.py NORMSERVED MODEL_REPOSITORY NORMSERVE_BENCH
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from grpc_stubs import pb, stub
from normserved_process import NormservedProcess

NORMSERVED, REPOSITORY, BENCH = sys.argv[1:4]
TEXTS = ["the house is small .", "we go home today and the dog runs quickly",
         "music at night , water and bread", "Berlin is old but the city is new"]
SOURCES = ["das Haus ist klein .", "wir gehen heute nach Hause", "Musik in der Nacht",
           "Berlin ist alt aber die Stadt ist neu"]
CALLS = 12
MT_CALLS = 40


def member(repo, name, source, model_json):
    shutil.copytree(os.path.join(REPOSITORY, source), os.path.join(repo, name))
    with open(os.path.join(repo, name, "model.json"), "w") as f:
        json.dump(model_json, f)


def samples(text, metric, **labels):
    """{label-string: value} of the samples of `metric` whose labels include `labels`."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
        if not match or match.group(1) != metric:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if all(have.get(k) == v for k, v in labels.items()):
            found[match.group(2)] = float(match.group(3))
    return found


def total(text, metric, **labels):
    return sum(samples(text, metric, **labels).values())


class ShadowTrafficE2ETest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="normserve_shadow_e2e_")
        repo = os.path.join(cls.root, "repository")
        member(repo, "enlm", "enlm", {"group": "lm"})
        member(repo, "enlm_rms", "enlm",
               {"group": "lm", "convert_norm": "rmsnorm", "shadow": {"fraction": 1.0}})
        member(repo, "deen", "deen", {"group": "mt"})
        member(repo, "deen_copy", "deen", {"group": "mt", "shadow": {"fraction": 0.5}})
        cls.server = NormservedProcess(NORMSERVED, repo)
        cls.client = stub(cls.server.target)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.root, ignore_errors=True)

    def wait_for(self, metric, want, **labels):
        """Polls the metrics until the samples of `metric` with `labels` sum to `want`."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = self.server.metrics()
            if total(text, metric, **labels) >= want:
                return text
            time.sleep(0.2)
        self.fail(f"{metric} {labels} did not reach {want}:\n"
                  + "\n".join(l for l in text.splitlines() if "shadow" in l))

    def test_copies_of_group_requests_run_on_the_shadow_and_agree(self):
        texts = [t.encode() for t in TEXTS]
        for i in range(CALLS):
            score = self.client.Score(pb.ScoreRequest(model="lm", texts=texts[i % 4:]),
                                      timeout=60)
            self.assertEqual((score.model, score.norm), ("enlm", "layernorm"))
            pieces = list(self.client.Generate(pb.GenerateRequest(
                model="lm", prompt=TEXTS[i % 4].encode(),
                options=pb.GenerateOptions(max_new_tokens=12, temperature=0.7, seed=i)),
                timeout=60))
            self.assertEqual(pieces[-1].model, "enlm")
        mt = []
        for i in range(MT_CALLS):
            reply = self.client.Translate(pb.TranslateRequest(
                model="mt", texts=[SOURCES[i % 4].encode()]), timeout=60)
            self.assertEqual(reply.model, "deen")
            mt.append(reply.translations[0].hypotheses[0].text)

        lm = dict(primary="enlm", shadow="enlm_rms", norm="rmsnorm")
        text = self.wait_for("normserve_shadow_requests_total", CALLS, rpc="Score", **lm)
        text = self.wait_for("normserve_shadow_requests_total", CALLS, rpc="Generate", **lm)
        self.assertEqual(total(text, "normserve_shadow_requests_total", outcome="compared",
                               **lm), 2 * CALLS, text)
        diff_sum = total(text, "normserve_shadow_logprob_abs_diff_sum", rpc="Score", **lm)
        diff_count = total(text, "normserve_shadow_logprob_abs_diff_count", rpc="Score", **lm)
        self.assertEqual(diff_count, CALLS)
        self.assertLess(diff_sum / diff_count, 1e-4)
        self.assertEqual(
            total(text, "normserve_shadow_agreement_ratio_count", rpc="Generate", **lm), CALLS)
        self.assertEqual(
            total(text, "normserve_shadow_agreement_ratio_sum", rpc="Generate", **lm), CALLS)

        copy = dict(primary="deen", shadow="deen_copy", rpc="Translate")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = self.server.metrics()
            compared = total(text, "normserve_shadow_requests_total", outcome="compared", **copy)
            if compared == total(text, "normserve_shadow_agreement_ratio_count", **copy) and \
                    compared > 0 and total(text, "normserve_queue_depth", model="deen_copy") == 0:
                break
            time.sleep(0.5)
        # Fraction 0.5 of 40: P(outside 8..32) < 1e-4.
        self.assertGreaterEqual(compared, 8, text)
        self.assertLessEqual(compared, 32, text)
        self.assertEqual(total(text, "normserve_shadow_agreement_ratio_sum", **copy), compared)
        # Copies are not client requests: only the 40 primary calls count for the group.
        self.assertEqual(total(text, "normserve_requests_total", model="deen", rpc="Translate"),
                         MT_CALLS)
        self.assertEqual(total(text, "normserve_requests_total", model="deen_copy"), 0)

        # The shadow model answers when named, with the primary's outputs.
        direct = self.client.Translate(pb.TranslateRequest(
            model="deen_copy", texts=[SOURCES[0].encode()]), timeout=60)
        self.assertEqual(direct.translations[0].hypotheses[0].text, mt[0])

        # normserve-bench drives a group by its name; last, as its requests are copied too.
        report_path = os.path.join(self.root, "bench.json")
        out = subprocess.run([BENCH, "--server", self.server.target, "--model", "lm",
                              "--concurrency", "2", "--requests", "6", "--warmup-secs", "0",
                              "--json", report_path],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        with open(report_path) as f:
            report = json.load(f)
        self.assertEqual(report["rpc"], "score")
        self.assertEqual(report["steps"][0]["ok"], 6)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
