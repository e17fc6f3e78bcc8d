"""Unit tests of scripts/reproduction-report.py: the training totals from trainer logs and
checkpoints (resumed and fine-tuned runs included) and the rendered tables.

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


def write_run(root, name, log, evaluation, group="compare"):
    run = root / "runs" / group / name
    run.mkdir(parents=True, exist_ok=True)
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


def write_checkpoint(path, step, train_seconds, train_tokens):
    """A tensor-less safetensors file with the trainer state in its metadata."""
    state = json.dumps({"step": step, "train_seconds": train_seconds,
                        "train_tokens": train_tokens})
    header = json.dumps({"__metadata__": {"format": "pt",
                                          "normserve_train_state": state}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(header).to_bytes(8, "little") + header)


class CheckpointTotalsTest(unittest.TestCase):
    def test_newest_checkpoint_and_the_init_from_base_count(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp)
            base = root / "base" / "checkpoints" / "checkpoint_400.safetensors"
            write_checkpoint(base, 400, 800.0, 1_000_000)
            run = root / "finetune"
            write_checkpoint(run / "checkpoints" / "checkpoint_200.safetensors", 200, 390.0, 1)
            # checkpoint_1000 sorts before checkpoint_200 as text; the step decides.
            write_checkpoint(run / "checkpoints" / "checkpoint_1000.safetensors", 1000, 1200.0,
                             1_800_000)
            (run / "train.log").write_text(
                "2026-11-23 06:00:00 initialized from " + str(base) + " (step 400); optimizer,"
                " schedule and data order start afresh\n" + RESUMED_LOG)
            stats = report.train_stats(run)
        self.assertEqual(stats["updates"], 1400)
        self.assertEqual(stats["train_seconds"], 2000)
        self.assertEqual(stats["ms_per_update"], round(1000 * 2000 / 1400, 1))
        self.assertEqual(stats["target_tokens_per_s"], 1400)
        self.assertEqual(stats["base_updates"], 400)
        self.assertEqual(stats["valid_ppl"], 200.5)


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

    def test_bundled_table_lists_the_lane_with_fine_tuning_split_out(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp)
            base = root / "runs" / "bundled" / "deen-base" / "checkpoints"
            base = base / "checkpoint_400.safetensors"
            write_checkpoint(base, 400, 800.0, 1_000_000)
            mt = {"architecture": "transformer_mt",
                  "test": {"bleu": 12.5, "chrf": 30.25,
                           "samples": {"Guten Morgen": "Good morning", "der Hund": "the dog"}},
                  "serving": lm_eval(1, 1, 1)["serving"], "norm_kernel": {}}
            write_run(root, "deen", f"2026-11-23 06:00:00 initialized from {base} (step 400)\n"
                      + RESUMED_LOG, mt, group="bundled")
            write_run(root, "enlm", RESUMED_LOG.replace("rmsnorm", "layernorm"),
                      lm_eval(155.8, 1, 1), group="bundled")
            base_test = {"bleu": 9.0, "chrf": 27.0, "samples": {"Guten Morgen": "morning"}}
            write_run(root, "deen-base", RESUMED_LOG, dict(mt, test=base_test), group="bundled")
            results = report.load(root / "runs" / "eval")
            table = report.bundled_table(results)
            samples = report.samples_table(results)
        rows = table.splitlines()[2:]
        self.assertEqual([r.split(" | ")[0] for r in rows], ["| deen", "| enlm", "| deen-base"])
        # 400 base updates from the checkpoint, 300 of its own from the log; 800 s + 3700 s.
        self.assertIn("| deen | rmsnorm | 400 + 300 fine-tuning | 75.0 min "
                      "| BLEU 12.50, chrF 30.25 |", rows[0])
        self.assertIn("| enlm | layernorm | 300 | 61.7 min | ppl 155.80 | 200.50 |", rows[1])
        self.assertEqual(samples.splitlines(), [
            "| input | `deen` | `deen-base` |", "| --- | --- | --- |",
            "| Guten Morgen | Good morning | morning |", "| der Hund | the dog | - |"])


if __name__ == "__main__":
    unittest.main()
