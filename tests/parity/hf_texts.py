"""The text of the Hugging Face parity tests, taken from the repository's own prose.

The sentences of README.md and docs/*.md (code blocks, tables and headings left out) train
the SentencePiece models of tests/parity/hf_make_models.py and are the inputs of
tests/parity/hf_reference.py, with a few sentences added that the models' vocabularies cannot
hold (Llama's byte fallback, Marian's <unk>) and some that start with a Marian language token.
"""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[2]
PROSE_FILES = ["README.md", "docs/deploy.md", "docs/kernels.md", "docs/reproduction.md"]

# Marked-up words the tokenizers treat as special tokens: the reference tokenizers would turn
# them into control ids where a plain SentencePiece encoding would not.
SPECIAL_MARKS = re.compile(r"</?s>|<pad>|<unk>|>>|<<")

# Characters no training sentence has (CJK, emoji, Cyrillic, Arabic, combining marks), a
# few Marian language tokens (the vocabulary has >>deu<< and >>fra<<, not >>xyz<<), and
# spacing that tokenizers normalize differently.
EXTRA_TEXTS = [
    "漢字とかなの文は語彙の外にある。",
    "The model answered 🙂 and then 🚀 twice.",
    "Привет, мир: a greeting the vocabulary never saw.",
    "مرحبا بالعالم",
    "Zoë's café serves crème brûlée at 5 €.",
    "A combining accent: e\u0301 and a\u0308.",
    "Tabs\tand  double  spaces  stay.",
    "  leading and trailing spaces  ",
    ">>deu<< The server loads each model directory once.",
    ">>fra<< Every request names its model.",
    ">>deu<< 漢字 and an emoji 🙂 after the language token.",
    ">>xyz<< An unknown language token.",
]


def _prose_lines(text):
    """The lines of a Markdown file outside code blocks, tables, headings and HTML."""
    in_code = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code = not in_code
            continue
        if in_code or not stripped or stripped[0] in "#|<>":
            continue
        yield stripped


def _sentences(text):
    """Paragraphs of prose joined and split after sentence-ending punctuation."""
    paragraph = []
    lines = list(_prose_lines(text))
    for line in lines + [""]:
        if line:
            paragraph.append(line.lstrip("-* "))
            continue
        joined = " ".join(paragraph)
        paragraph = []
        for sentence in re.split(r"(?<=[.!?:;])\s+", joined):
            sentence = sentence.replace("`", "").replace("**", "").strip()
            if sentence:
                yield sentence
    joined = " ".join(paragraph)
    if joined:
        yield joined


def prose_sentences():
    """Every sentence of the repository's prose, in file order, without special marks."""
    out = []
    for name in PROSE_FILES:
        for sentence in _sentences((REPO / name).read_text(encoding="utf-8")):
            if not SPECIAL_MARKS.search(sentence):
                out.append(sentence)
    return out


def reference_texts(count=228):
    """`count` prose sentences of 3 to 40 words spread over the files, then EXTRA_TEXTS."""
    candidates = [s for s in prose_sentences() if 3 <= len(s.split()) <= 40]
    if len(candidates) < count:
        raise SystemExit(f"hf_texts: only {len(candidates)} prose sentences, {count} wanted")
    stride = len(candidates) / count
    chosen = [candidates[int(i * stride)] for i in range(count)]
    return chosen + EXTRA_TEXTS
