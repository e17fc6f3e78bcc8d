#!/usr/bin/env python3
"""Prepares the training data of normserve-train from Debian-packaged text.

DE->EN: the Ding dictionary of the Debian package `trans-de-en` (/usr/share/trans/de-en).
Each line is `DE :: EN`; ` | ` separates aligned sub-entries on both sides, `;` separates
synonyms, and `{..}`, `[..]`, `(..)` and `<..>` are annotations (grammar, domain, remarks,
alternative spellings), `/../` an abbreviation. A line whose two sides have different numbers
of sub-entries is skipped, never aligned by guesswork. Every aligned sub-entry gives one pair:
the first synonym of each side with its annotations removed.

EN LM: the English side of the same dictionary, every synonym of every sub-entry as one text.

DE->EN phrase-weighted fine-tuning set (train-phrases): the training pairs with 2+ words on
both sides, each also without its final `.`, `!` or `?` when both sides end in the same one
(people type "Guten Morgen" as often as "Guten Morgen!"), and one in PHRASE_SINGLE_WORD_KEEP
of the other pairs, so that fine-tuning on it keeps the single-word entries in mind. 70% of
the dictionary's pairs are single words; the bundled model is fine-tuned on this set after
its training on the whole split (scripts/train-models.sh).

Both are deduplicated and split into train/valid/test by a hash of the normalized source
(the German side; the text itself for the LM), so that every copy of a source lands in the
same split and no test source appears in training. The output is deterministic:

  OUT/deen/{train,valid,test,train-phrases}.{de,en}   OUT/deen/stats.json
  OUT/enlm/{train,valid,test}.txt       OUT/enlm/stats.json

Usage: scripts/prepare-data.py [--ding FILE] [--out DIR] [--valid-per-mille N]
                               [--test-per-mille N] [--min-words N] [--max-words N]
OUT defaults to data/ at the repository root (ignored by git). The SentencePiece vocabulary
is trained later, by normserve-train, on the training split only.
"""
import argparse
import hashlib
import json
import os
import re
import sys
import unicodedata

DING_PATH = "/usr/share/trans/de-en"
OPENERS = {"{": "}", "[": "]", "(": ")", "<": ">"}
CLOSERS = {v: k for k, v in OPENERS.items()}
# An abbreviation marker such as "/Abs./" or "/MOU/": a whitespace-delimited token in slashes.
ABBREVIATION = re.compile(r"(?:(?<=\s)|^)/[^/\s][^/]*/(?=\s|$)")


def split_top_level(text, separator):
    """Splits `text` on `separator` where it is outside every bracket pair."""
    parts, depth, start, i = [], 0, 0, 0
    n = len(separator)
    while i < len(text):
        ch = text[i]
        if ch in OPENERS:
            depth += 1
        elif ch in CLOSERS and depth > 0:
            depth -= 1
        elif depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i])
            i += n
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def strip_annotations(text):
    """Removes bracketed annotations (nested ones included), abbreviation markers and stray
    brackets, and normalizes whitespace."""
    out, depth = [], 0
    for ch in text:
        if ch in OPENERS:
            depth += 1
            out.append(" ")
        elif ch in CLOSERS:
            if depth > 0:
                depth -= 1
            out.append(" ")
        elif depth == 0:
            out.append(ch)
    text = ABBREVIATION.sub(" ", "".join(out))
    text = " ".join(text.split())
    # Punctuation left dangling by a removed annotation: "word ," -> "word,".
    text = re.sub(r" ([,.;:!?])(?=\s|$)", r"\1", text)
    return text.strip(" ,;:")


def clean(text):
    return strip_annotations(unicodedata.normalize("NFC", text))


def normalize_key(text):
    """The identity of a text for deduplication and splitting."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def parse_line(line):
    """Parses one Ding line. Returns (pairs, english_texts, status) where pairs are the
    aligned (de, en) first synonyms, english_texts every cleaned English synonym, and status
    one of "ok", "comment", "malformed", "unequal"."""
    line = line.rstrip("\n").rstrip("\r")
    if not line.strip() or line.startswith("#"):
        return [], [], "comment"
    sides = line.split(" :: ")
    if len(sides) != 2:
        return [], [], "malformed"
    de_entries = [e.strip() for e in split_top_level(sides[0], " | ")]
    en_entries = [e.strip() for e in split_top_level(sides[1], " | ")]
    english = []
    for entry in en_entries:
        for synonym in split_top_level(entry, ";"):
            text = clean(synonym)
            if text:
                english.append(text)
    if len(de_entries) != len(en_entries):
        return [], english, "unequal"
    pairs = []
    for de, en in zip(de_entries, en_entries):
        de_text = clean(split_top_level(de, ";")[0])
        en_text = clean(split_top_level(en, ";")[0])
        if de_text and en_text:
            pairs.append((de_text, en_text))
    return pairs, english, "ok"


def bucket(key):
    """A stable number in 0..999 from a normalized text."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 1000


def split_name(key, valid_per_mille, test_per_mille):
    b = bucket(key)
    if b < test_per_mille:
        return "test"
    if b < test_per_mille + valid_per_mille:
        return "valid"
    return "train"


def word_count(text):
    return len(text.split())


PHRASE_SINGLE_WORD_KEEP = 4
SENTENCE_ENDS = ".!?"


def phrase_weighted(pairs):
    """The phrase-weighted fine-tuning set drawn from training `pairs` (see the module doc)."""
    out, seen = [], set()

    def add(de, en):
        key = (normalize_key(de), normalize_key(en))
        if de and en and key not in seen:
            seen.add(key)
            out.append((de, en))

    for de, en in pairs:
        if word_count(de) >= 2 and word_count(en) >= 2:
            add(de, en)
            if de[-1] in SENTENCE_ENDS and de[-1] == en[-1]:
                add(de[:-1].rstrip(), en[:-1].rstrip())
        elif bucket(normalize_key(de)) % PHRASE_SINGLE_WORD_KEEP == 0:
            add(de, en)
    return out


def build(lines, valid_per_mille=10, test_per_mille=10, min_words=1, max_words=60):
    """Returns ({split: [(de, en)]}, {split: [text]}, stats) from Ding lines."""
    stats = {"lines": 0, "comment_lines": 0, "malformed_lines": 0, "unequal_lines": 0,
             "aligned_pairs": 0, "pairs_out_of_length": 0, "duplicate_pairs": 0,
             "pairs_2plus_words": 0, "pairs_4plus_words": 0}
    mt = {"train": [], "valid": [], "test": []}
    lm = {"train": [], "valid": [], "test": []}
    seen_pairs, seen_texts = set(), set()
    for line in lines:
        stats["lines"] += 1
        pairs, english, status = parse_line(line)
        if status == "comment":
            stats["comment_lines"] += 1
            continue
        if status == "malformed":
            stats["malformed_lines"] += 1
            continue
        if status == "unequal":
            stats["unequal_lines"] += 1
        for de, en in pairs:
            stats["aligned_pairs"] += 1
            wd, we = word_count(de), word_count(en)
            if wd >= 2 and we >= 2:
                stats["pairs_2plus_words"] += 1
            if wd >= 4 and we >= 4:
                stats["pairs_4plus_words"] += 1
            if not (min_words <= wd <= max_words and min_words <= we <= max_words):
                stats["pairs_out_of_length"] += 1
                continue
            key = (normalize_key(de), normalize_key(en))
            if key in seen_pairs:
                stats["duplicate_pairs"] += 1
                continue
            seen_pairs.add(key)
            mt[split_name(key[0], valid_per_mille, test_per_mille)].append((de, en))
        for text in english:
            if not min_words <= word_count(text) <= max_words:
                continue
            key = normalize_key(text)
            if key in seen_texts:
                continue
            seen_texts.add(key)
            lm[split_name(key, valid_per_mille, test_per_mille)].append(text)
    for name in mt:
        stats["deen_" + name] = len(mt[name])
        stats["enlm_" + name] = len(lm[name])
    return mt, lm, stats


def write_lines(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def main(argv=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ding", default=DING_PATH,
                        help="the Ding file (Debian package trans-de-en)")
    parser.add_argument("--out", default=os.path.join(root, "data"))
    parser.add_argument("--valid-per-mille", type=int, default=10)
    parser.add_argument("--test-per-mille", type=int, default=10)
    parser.add_argument("--min-words", type=int, default=1)
    parser.add_argument("--max-words", type=int, default=60)
    args = parser.parse_args(argv)
    if not os.path.exists(args.ding):
        print(f"prepare-data: {args.ding} is missing; install it with "
              "`apt-get install trans-de-en`", file=sys.stderr)
        return 1
    if args.valid_per_mille < 0 or args.test_per_mille < 0 or \
            args.valid_per_mille + args.test_per_mille >= 1000:
        print("prepare-data: valid + test per mille must be in 0..999", file=sys.stderr)
        return 2
    with open(args.ding, encoding="utf-8") as f:
        mt, lm, stats = build(f, args.valid_per_mille, args.test_per_mille, args.min_words,
                              args.max_words)
    stats["source"] = args.ding
    stats["settings"] = {k: getattr(args, k) for k in
                         ("valid_per_mille", "test_per_mille", "min_words", "max_words")}
    deen, enlm = os.path.join(args.out, "deen"), os.path.join(args.out, "enlm")
    os.makedirs(deen, exist_ok=True)
    os.makedirs(enlm, exist_ok=True)
    mt["train-phrases"] = phrase_weighted(mt["train"])
    stats["deen_train-phrases"] = len(mt["train-phrases"])
    for name, pairs in mt.items():
        write_lines(os.path.join(deen, name + ".de"), [de for de, _ in pairs])
        write_lines(os.path.join(deen, name + ".en"), [en for _, en in pairs])
    for name, texts in lm.items():
        write_lines(os.path.join(enlm, name + ".txt"), texts)
    for path in (os.path.join(deen, "stats.json"), os.path.join(enlm, "stats.json")):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=2, ensure_ascii=False)
            f.write("\n")
    print(f"deen: {stats['deen_train']} train, {stats['deen_valid']} valid, "
          f"{stats['deen_test']} test pairs, {stats['deen_train-phrases']} phrase-weighted "
          f"({stats['aligned_pairs']} aligned, "
          f"{stats['unequal_lines']} lines with unequal sub-entries skipped, "
          f"{stats['duplicate_pairs']} duplicates); "
          f"enlm: {stats['enlm_train']} train, {stats['enlm_valid']} valid, "
          f"{stats['enlm_test']} test texts -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
