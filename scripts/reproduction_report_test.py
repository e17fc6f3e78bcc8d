"""Unit tests of scripts/reproduction-report.py: the trainer-log parsing (resumed runs
included) and the rendered tables.

Run from scripts/: python3 -m unittest reproduction_report_test
"""
import importlib.util
import json
import os
import pathlib
import tempfile
import unittest

_HERE = os.path.dirname(os.path.abspath(__file__))
_SPEC = importlib.util.spec_from_file_location("reproduction_report",
                                               os.path.join(_HERE, "reproduction-report.py"))
report = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(report)

# A run stopped at step 100 by a signal, resumed to 200, then resumed to 300: only the parts
# that finished log a "trained" line; the last "final model" line is the exported model's.
RESUMED_LOG = """\
2026-11-23 06:00:00 model: 1950208 parameters, norm rmsnorm, 1 threads
2026-11-23 06:01:00 step 100 | valid loss 6.0 | nll 5.9 | ppl 390.00 | 5.0 s
2026-11-23 06:01:10 trained 100 updates in 1m40s (1500 target tokens/s)
2026-11-23 06:01:20 final model | valid loss 5.9 | nll 5.8 | ppl 330.00 | 5.0 s
2026-11-23 06:02:00 model: 1950208 parameters, norm rmsnorm, 1 threads
2026-11-23 06:02:30 stopped at step 150; resume with --resume x
2026-11-23 06:03:00 model: 1950208 parameters, norm rmsnorm, 1 threads
2026-11-23 06:04:00 step 200 | valid loss 5.5 | nll 5.4 | ppl 220.00 | 5.0 s
2026-11-23 06:04:10 trained 200 updates in 1h00m (3000 target tokens/s)
2026-11-23 06:04:20 final model | valid loss 5.4 | nll 5.3 | ppl 200.50 | 5.0 s
"""


def write_run(root, name, log, evaluation):
    run = root / "runs" / "compare" / name
    run.mkdir(parents=True)
    (run / "train.log").write_text(log)
    evaluation["run"] = str(run)
    (root / "runs" / "eval").mkdir(parents=True, exist_ok=True)
    (root / "runs" / "eval" / f"{name}.json").write_text(json.dumps(evaluation))


def lm_eval(ppl, rps8, norm_us):
    return {"architecture": "transformer_lm", "test": {"test_ppl": ppl},
            "serving": {"1": {"throughput_rps": 100.0, "tokens_per_s": 900.0, "p50_ms": 5.0,
                              "p90_ms": 6.0, "p99_ms": 7.25},
                        "8": {"throughput_rps": rps8, "tokens_per_s": 4000.0, "p50_ms": 9.0,
                              "p90_ms": 10.0, "p99_ms": 11.0}},
            "norm_kernel": {"rmsnorm": {"sampled_calls": 10, "mean_us": norm_us}}}


class SecondsTest(unittest.TestCase):
    def test_every_duration_format_of_the_trainer(self):
        self.assertEqual(report.seconds("59s"), 59)
        self.assertEqual(report.seconds("8m09s"), 489)
        self.assertEqual(report.seconds("1h02m"), 3720)


class TrainStatsTest(unittest.TestCase):
    def test_resumed_parts_add_up_and_the_last_export_counts(self):
        with tempfile.TemporaryDirectory() as tmp:
            run = pathlib.Path(tmp)
            (run / "train.log").write_text(RESUMED_LOG)
            stats = report.train_stats(run)
        self.assertEqual(stats["updates"], 300)
        self.assertEqual(stats["train_seconds"], 100 + 3600)
        self.assertEqual(stats["ms_per_update"], round(1000 * 3700 / 300, 1))
        # Token rates weighted by the time of each part.
        self.assertEqual(stats["target_tokens_per_s"], round((1500 * 100 + 3000 * 3600) / 3700))
        self.assertEqual(stats["valid_ppl"], 200.5)
        self.assertEqual(stats["valid_curve"], [(100, 390.0), (200, 220.0)])
        self.assertEqual(stats["norm"], "rmsnorm")
        self.assertEqual(stats["parameters"], 1950208)


class RenderTest(unittest.TestCase):
    def test_tables_between_the_markers_with_times_relative_to_layernorm(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp)
            ln_log = RESUMED_LOG.replace("rmsnorm", "layernorm")
            rms_log = ln_log.replace("1h00m", "50m00s").replace("layernorm", "rmsnorm")
            write_run(root, "lm-layernorm", ln_log, lm_eval(193.13, 581.5, 37.6))
            write_run(root, "lm-rmsnorm", rms_log, lm_eval(195.72, 663.4, 30.0))
            seed2 = root / "runs" / "compare-seed2" / "lm-layernorm"
            seed2.mkdir(parents=True)
            (seed2 / "train.log").write_text(ln_log.replace("ppl 200.50", "ppl 210.55"))
            other_seeds = report.load_other_seeds(root / "runs")
            tables = report.render(report.load(root / "runs" / "eval"), other_seeds)
        self.assertEqual(other_seeds, {"lm-layernorm": {2: 210.55}})
        # 210.55 / 200.50 - 1 = 5.0%; RMSNorm has no second seed.
        self.assertIn("| LayerNorm | 200.50 | 210.55 | 5.0% |", tables)
        doc = report.replace_tables(f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n", tables)
        self.assertEqual(doc, f"intro\n{report.BEGIN}\n{tables}\n{report.END}\noutro\n")
        with self.assertRaises(ValueError):
            report.replace_tables("a report without markers", tables)
        lm_section = tables.split("### English LM")[1]
        rows = {}  # the first row of each norm there: the LM results table
        for line in lm_section.splitlines():
            if line.startswith("| "):
                rows.setdefault(line.split(" | ")[0].lstrip("| "), line)
        # LayerNorm: 3700 s / 300 updates; RMSNorm: 3100 s / 300 updates = -16.2%.
        self.assertIn("| 193.13 | 200.50 | 12333 (+0.0%) |", rows["LayerNorm"])
        self.assertIn("| 195.72 | 200.50 | 10333 (-16.2%) |", rows["RMSNorm"])
        self.assertIn("| 5.0 / 7.2 | 663.4 | 4000 | rmsnorm 30.0 |", rows["RMSNorm"])
        self.assertIn("| BatchNorm | not run |", lm_section)
        self.assertIn("(no LayerNorm baseline run)", tables)  # no MT runs at all


if __name__ == "__main__":
    unittest.main()
