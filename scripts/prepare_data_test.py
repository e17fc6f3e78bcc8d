"""Unit tests of scripts/prepare-data.py on tricky Ding lines.

Run with: python3 -m unittest scripts/prepare_data_test.py   (or from scripts/: -m unittest
prepare_data_test)
"""
import importlib.util
import os
import tempfile
import unittest

_HERE = os.path.dirname(os.path.abspath(__file__))
_SPEC = importlib.util.spec_from_file_location("prepare_data",
                                               os.path.join(_HERE, "prepare-data.py"))
prepare = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(prepare)


class ParseLineTest(unittest.TestCase):
    def test_annotations_are_removed(self):
        pairs, english, status = prepare.parse_line(
            "Aal {m} (auf der Speisekarte) [cook.] :: Eel (on a menu)\n")
        self.assertEqual(status, "ok")
        self.assertEqual(pairs, [("Aal", "Eel")])
        self.assertEqual(english, ["Eel"])

    def test_angle_brackets_and_abbreviations_are_annotations(self):
        pairs, _, _ = prepare.parse_line(
            "Absender {m} /Abs./ :: sender <senders> [Br.]")
        self.assertEqual(pairs, [("Absender", "sender")])
        pairs, _, _ = prepare.parse_line(
            "Absichtserklärung {f} (Völkerrecht) [pol.] :: "
            "memorandum of understanding /MOU/ (international law)")
        self.assertEqual(pairs, [("Absichtserklärung", "memorandum of understanding")])

    def test_nested_annotations(self):
        pairs, _, _ = prepare.parse_line("Haus {n} (alt (sehr alt)) :: house (old [archaic])")
        self.assertEqual(pairs, [("Haus", "house")])

    def test_bar_aligns_sub_entries(self):
        pairs, _, status = prepare.parse_line(
            "Aalbestand {m} | Aalbestände {pl} :: eel stock | eel stocks")
        self.assertEqual(status, "ok")
        self.assertEqual(pairs, [("Aalbestand", "eel stock"), ("Aalbestände", "eel stocks")])

    def test_first_synonym_is_the_pair_and_every_synonym_is_lm_text(self):
        pairs, english, _ = prepare.parse_line(
            "Aalreuse {f}; Aalkorb {m} | Aalreusen {pl}; Aalkörbe {pl} :: "
            "eel trap; weel [archaic] <weely> | eel traps; weels")
        self.assertEqual(pairs, [("Aalreuse", "eel trap"), ("Aalreusen", "eel traps")])
        self.assertEqual(english, ["eel trap", "weel", "eel traps", "weels"])

    def test_separators_inside_annotations_do_not_split(self):
        pairs, english, status = prepare.parse_line(
            "jdm. die Absolution erteilen {vt} (a; b | c) :: "
            "to shrive sb. {shrove; shriven} [dated]; to give sb. absolution")
        self.assertEqual(status, "ok")
        self.assertEqual(pairs, [("jdm. die Absolution erteilen", "to shrive sb.")])
        self.assertEqual(english, ["to shrive sb.", "to give sb. absolution"])

    def test_unequal_sub_entry_counts_are_skipped_not_misaligned(self):
        pairs, english, status = prepare.parse_line(
            "Absender {m} | Absender {pl} | Versender {m} :: sender | senders")
        self.assertEqual(status, "unequal")
        self.assertEqual(pairs, [])
        # The English side is still good LM text.
        self.assertEqual(english, ["sender", "senders"])

    def test_empty_after_cleaning_is_dropped(self):
        pairs, _, status = prepare.parse_line("{pl} | Haus :: [Br.] | house")
        self.assertEqual(status, "ok")
        self.assertEqual(pairs, [("Haus", "house")])

    def test_comments_and_malformed_lines(self):
        self.assertEqual(prepare.parse_line("# Version :: devel 2023-01-30\n")[2], "comment")
        self.assertEqual(prepare.parse_line("\n")[2], "comment")
        self.assertEqual(prepare.parse_line("kein Trenner hier")[2], "malformed")
        self.assertEqual(prepare.parse_line("a :: b :: c")[2], "malformed")

    def test_punctuation_and_whitespace_are_tidied(self):
        pairs, _, _ = prepare.parse_line(
            "Ich wollte   nicht {adv} , sorry. :: I did not  want (it) , sorry.")
        self.assertEqual(pairs, [("Ich wollte nicht, sorry.", "I did not want, sorry.")])

    def test_slashes_inside_words_stay(self):
        pairs, _, _ = prepare.parse_line(
            "die Absicht haben/vorhaben, etw. zu tun {vi} :: to have it in mind to do sth./that …")
        self.assertEqual(pairs, [("die Absicht haben/vorhaben, etw. zu tun",
                                  "to have it in mind to do sth./that …")])


class BuildTest(unittest.TestCase):
    LINES = [
        "# comment :: here\n",
        "Haus {n} | Häuser {pl} :: house | houses\n",
        "Haus {n} :: house\n",                    # duplicate pair
        "HAUS :: House\n",                        # duplicate after normalization
        "Haus {n} :: home\n",                     # same source, other target
        "a | b | c :: x | y\n",                   # unequal
        "Das ist ein langer Satz hier. :: This is a long sentence here.\n",
    ]

    def test_dedup_split_and_stats(self):
        mt, lm, stats = prepare.build(self.LINES, valid_per_mille=0, test_per_mille=0)
        self.assertEqual(stats["unequal_lines"], 1)
        self.assertEqual(stats["comment_lines"], 1)
        self.assertEqual(stats["duplicate_pairs"], 2)
        self.assertEqual(mt["train"], [("Haus", "house"), ("Häuser", "houses"), ("Haus", "home"),
                                       ("Das ist ein langer Satz hier.",
                                        "This is a long sentence here.")])
        self.assertEqual(stats["pairs_2plus_words"], 1)
        self.assertEqual(stats["pairs_4plus_words"], 1)
        self.assertIn("x", lm["train"])  # the unequal line's English side
        self.assertEqual(len(lm["train"]), len(set(t.casefold() for t in lm["train"])))

    def test_a_source_never_straddles_splits(self):
        lines = [f"Wort{i} | Wort{i} :: word{i} | term{i}\n" for i in range(2000)]
        mt, _, _ = prepare.build(lines, valid_per_mille=100, test_per_mille=100)
        where = {}
        for split, pairs in mt.items():
            for de, _ in pairs:
                where.setdefault(prepare.normalize_key(de), set()).add(split)
        self.assertTrue(all(len(s) == 1 for s in where.values()))
        self.assertGreater(len(mt["test"]), 100)
        self.assertGreater(len(mt["valid"]), 100)
        train_sources = {prepare.normalize_key(de) for de, _ in mt["train"]}
        self.assertFalse(train_sources & {prepare.normalize_key(de) for de, _ in mt["test"]})

    def test_deterministic(self):
        lines = [f"Satz {i} :: sentence {i}\n" for i in range(500)]
        self.assertEqual(prepare.build(lines, 50, 50), prepare.build(list(lines), 50, 50))

    def test_phrase_weighted_set(self):
        pairs = [("Guten Morgen!", "Good morning!"),       # phrase, also without the "!"
                 ("Wie geht's?", "How are you."),           # ends differ: kept as it is
                 ("ein großes Haus", "a big house"),
                 ("Guten Tag!", "Good day!"), ("Guten Tag", "Good day")]  # no second copy
        singles = [(f"Wort{i}", f"word{i}") for i in range(400)]
        out = prepare.phrase_weighted(pairs + singles)
        self.assertEqual(out[:6], [("Guten Morgen!", "Good morning!"),
                                   ("Guten Morgen", "Good morning"),
                                   ("Wie geht's?", "How are you."),
                                   ("ein großes Haus", "a big house"),
                                   ("Guten Tag!", "Good day!"), ("Guten Tag", "Good day")])
        kept = out[6:]
        self.assertTrue(set(kept) <= set(singles))
        # One in PHRASE_SINGLE_WORD_KEEP single-word pairs, by a hash: about 100 of 400.
        self.assertTrue(60 < len(kept) < 140, len(kept))
        self.assertEqual(prepare.phrase_weighted(pairs + singles), out)

    def test_main_writes_the_files(self):
        with tempfile.TemporaryDirectory() as tmp:
            ding = os.path.join(tmp, "de-en")
            with open(ding, "w", encoding="utf-8") as f:
                f.writelines(self.LINES)
            out = os.path.join(tmp, "data")
            self.assertEqual(prepare.main(["--ding", ding, "--out", out,
                                           "--valid-per-mille", "0", "--test-per-mille", "0"]), 0)
            for name in ("train", "valid", "test", "train-phrases"):
                with open(os.path.join(out, "deen", name + ".de"), encoding="utf-8") as de, \
                        open(os.path.join(out, "deen", name + ".en"), encoding="utf-8") as en:
                    self.assertEqual(len(de.readlines()), len(en.readlines()))
            for name in ("train", "valid", "test"):
                self.assertTrue(os.path.exists(os.path.join(out, "enlm", name + ".txt")))
            with open(os.path.join(out, "deen", "train.de"), encoding="utf-8") as f:
                self.assertEqual(f.readline(), "Haus\n")


if __name__ == "__main__":
    unittest.main()
