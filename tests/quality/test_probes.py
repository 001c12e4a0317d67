"""Built-in probe / calibration sets and reading users' text files."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

from exporter.errors import ExitCode, ProbeError
from exporter.quality import probes

# ------------------------------------------------------------------------------------- built-in sets

SCRIPTS = {  # one character range per non-Latin script the probe set must cover
    "Chinese (Han)": r"[\u4e00-\u9fff]",
    "Japanese kana": r"[\u3040-\u30ff]",
    "Arabic": r"[\u0600-\u06ff]",
    "Cyrillic": r"[\u0400-\u04ff]",
    "Devanagari": r"[\u0900-\u097f]",
    "Greek": r"[\u0370-\u03ff]",
    "Korean (Hangul)": r"[\uac00-\ud7af]",
    "Hebrew": r"[\u0590-\u05ff]",
    "Thai": r"[\u0e00-\u0e7f]",
}

PROBE_CATEGORIES = {
    "sentence", "question", "query_short", "passage", "long_passage", "code", "numbers", "web", "emoji",
    "whitespace", "unicode", "paraphrase", "near_duplicate", "mixed_language",
}  # fmt: skip


def test_builtin_sizes():
    assert len(probes.builtin_probes()) >= 320
    assert len(probes.builtin_calibration()) >= 300


@pytest.mark.parametrize("kind", ["probe", "calibration"])
def test_builtin_texts_are_unique_and_non_blank(kind):
    texts = [t for t, _ in probes.builtin_records(kind)]
    assert all(t.strip() for t in texts)
    dupes = [t for t, c in Counter(texts).items() if c > 1]
    assert not dupes


def test_probe_and_calibration_sets_are_disjoint():
    assert not set(probes.builtin_probes()) & set(probes.builtin_calibration())
    # not even after trivial normalisation (case and surrounding whitespace)
    norm = {t.strip().lower() for t in probes.builtin_probes()}
    assert not norm & {t.strip().lower() for t in probes.builtin_calibration()}


def test_probe_categories_present():
    cats = Counter(c for _, c in probes.builtin_records("probe"))
    assert PROBE_CATEGORIES <= set(cats), PROBE_CATEGORIES - set(cats)
    assert sum(n for c, n in cats.items() if c.startswith("script_")) >= 40
    assert cats["paraphrase"] % 2 == 0 and cats["paraphrase"] >= 20  # pairs


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_probe_set_covers_non_latin_script(script):
    pattern = re.compile(SCRIPTS[script])
    assert sum(bool(pattern.search(t)) for t in probes.builtin_probes()) >= 3


def test_probe_set_has_long_passages():
    # all-MiniLM-L6-v2 truncates at 256 word pieces; > 300 words is well past it in any tokenizer
    long = [t for t, c in probes.builtin_records("probe") if c == "long_passage"]
    assert len(long) >= 5
    assert all(len(t.split()) > 300 for t in long)


def test_probe_set_has_odd_whitespace_and_unicode():
    texts = probes.builtin_probes()
    checks = {
        "tab": lambda t: "\t" in t,
        "newline inside": lambda t: "\n" in t.strip(),
        "leading space": lambda t: t.startswith(" "),
        "trailing space": lambda t: t.endswith(" "),
        "double space": lambda t: "  " in t.strip(),
        "combining accent": lambda t: "\u0301" in t,
        "zero-width joiner": lambda t: "\u200d" in t,
        "zero-width space": lambda t: "\u200b" in t,
        "RTL mark": lambda t: "\u200f" in t,
        "full-width": lambda t: re.search(r"[\uff01-\uff5e]", t) is not None,
        "emoji": lambda t: re.search(r"[\U0001f300-\U0001faff]", t) is not None,
        "url": lambda t: "https://" in t,
        "email": lambda t: re.search(r"\w@\w+\.\w", t) is not None,
        "price": lambda t: re.search(r"[$€£¥]\s?\d", t) is not None,
        "one word": lambda t: len(t.split()) == 1 and t.isalpha(),
        "two words": lambda t: len(t.split()) == 2,
    }
    missing = [name for name, check in checks.items() if not any(check(t) for t in texts)]
    assert not missing


def test_calibration_set_is_half_natural_text_and_holds_what_traffic_holds():
    """Calibration looks like traffic (issue 20): natural prose, and the kinds users send that int8 gets wrong:
    scripts the tokenizer does not cover, one-word queries (stopwords too), code, logs, URLs, numbers, emoji."""
    cats = Counter(c for _, c in probes.builtin_records("calibration"))
    natural = sum(cats[c] for c in ("sentence", "passage", "long_passage", "question"))
    assert natural / sum(cats.values()) >= 0.45
    assert {"code", "numbers", "web", "emoji", "long_passage", "mixed_language"} <= set(cats)
    assert {"script_rare", "query_word", "log", "url"} <= set(cats) and cats["query_word"] >= 20
    assert sum(n for c, n in cats.items() if c.startswith("script_")) >= 20


def test_builtin_lists_are_copies():
    texts = probes.builtin_probes()
    texts.clear()
    assert probes.builtin_probes()


@pytest.mark.parametrize("kind", ["probe", "calibration"])
def test_load_builtin_text_set(kind):
    ts = probes.load_text_set(None, kind)
    assert ts.name == f"builtin-{kind}-v{probes.BUILTIN_VERSION}"
    assert ts.source == f"builtin:{probes.BUILTIN_FILES[kind]}"
    assert ts.sha256 == probes.texts_sha256(ts.texts)
    assert ts == probes.load_text_set(None, kind)  # stable across loads
    with pytest.raises(dataclasses.FrozenInstanceError):
        ts.name = "x"  # type: ignore[misc]


def test_builtin_sets_have_different_hashes():
    assert probes.load_text_set(None, "probe").sha256 != probes.load_text_set(None, "calibration").sha256


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError):
        probes.load_text_set(None, "training")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- sha256


def test_texts_sha256_is_the_documented_netstring_digest():
    texts = ["a", "héllo", "two\nlines"]
    expected = hashlib.sha256("1:a,6:héllo,9:two\nlines,".encode()).hexdigest()
    assert probes.texts_sha256(texts) == expected
    assert probes.texts_sha256(tuple(texts)) == expected


def test_texts_sha256_pins_a_known_value():
    # a change of definition breaks every recorded manifest: this value must never change
    assert probes.texts_sha256(["hello", "world"]) == hashlib.sha256(b"5:hello,5:world,").hexdigest()
    assert probes.texts_sha256([]) == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    "a, b",
    [
        (["a\nb"], ["a", "b"]),  # a newline inside a text is not a separator
        (["ab", "c"], ["a", "bc"]),
        (["a", "b"], ["b", "a"]),  # order matters: embeddings are row-aligned
        (["a"], ["a "]),  # whitespace is part of the text
    ],
)
def test_texts_sha256_is_unambiguous(a, b):
    assert probes.texts_sha256(a) != probes.texts_sha256(b)


# ---------------------------------------------------------------------------------------- user files


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_read_txt(tmp_path):
    path = _write(tmp_path, "p.txt", "\ufefffirst\r\n\n   \n  kept with spaces  \n\tlast line\n")
    assert probes.read_texts(path) == ["first", "  kept with spaces  ", "\tlast line"]


def test_read_txt_uppercase_suffix(tmp_path):
    assert probes.read_texts(_write(tmp_path, "P.TXT", "one\ntwo")) == ["one", "two"]


def test_read_jsonl(tmp_path):
    body = (
        '{"text": "multi\\nline\\ttext", "category": "x"}\n'
        "\n"
        '"a plain JSON string"\n'
        '{"text": "  spaces kept  ", "id": 7}\n'
        '{"text": "emoji \\ud83d\\ude00 and \\u200d"}\n'
    )
    assert probes.read_texts(_write(tmp_path, "p.jsonl", body)) == [
        "multi\nline\ttext",
        "a plain JSON string",
        "  spaces kept  ",
        "emoji 😀 and \u200d",
    ]


def test_load_user_text_set(tmp_path):
    texts = [f"text number {i}" for i in range(probes.LIMITS["probe"].min_texts)]
    path = _write(tmp_path, "mine.txt", "\n".join(texts) + "\n")
    ts = probes.load_text_set(path, "probe")
    assert ts == probes.TextSet(name="mine.txt", texts=texts, sha256=ts.sha256, source=str(path))
    assert ts.sha256 == probes.texts_sha256(texts)


BAD_FILES = [
    # (file name, content or None for "do not create", expected message fragments)
    ("missing.txt", None, ["does not exist"]),
    ("empty.txt", b"", ["no texts", "empty"]),
    ("blank.txt", b"\n  \n\t\n", ["no texts"]),
    ("empty.jsonl", b"", ["no texts"]),
    ("blank.jsonl", b"\n\n", ["no texts"]),
    ("nul.txt", b"hello\x00world\n", ["binary", "NUL", "offset 5"]),
    ("latin1.txt", "café\n".encode("latin-1"), ["not valid UTF-8", "offset 3"]),
    ("binary.jsonl", bytes(range(256)), ["binary"]),
    ("bad.jsonl", b'{"text": "ok"}\n\n{"text": broken}\n', ["line 3", "not valid JSON"]),
    ("notext.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', ["line 2", '"text"']),
    ("number.jsonl", b"42\n", ["line 1", "JSON string"]),
    ("nonstring.jsonl", b'{"text": ["a"]}\n', ["line 1"]),
    ("emptytext.jsonl", b'{"text": "ok"}\n{"text": "   "}\n', ["line 2", "empty"]),
    ("texts.csv", b"a,b\n", ["unsupported extension", ".csv", ".txt", ".jsonl"]),
    ("texts.json", b'["a"]', ["unsupported extension", ".json"]),
    ("noext", b"hello\n", ["unsupported extension", "(none)"]),
    (
        "stratum.jsonl",
        b'{"text": "ok"}\n{"text": "x", "stratum": "typo"}\n',
        ["line 2", "unknown stratum", "'typo'", "prose_en", "uncovered_script", "user"],
    ),
]


@pytest.mark.parametrize("name, content, fragments", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_text_files(tmp_path, name, content, fragments):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ProbeError) as info:
        probes.load_text_set(path, "probe")
    err = info.value
    assert err.exit_code == ExitCode.USAGE
    assert err.hint, "every error says what to do"
    assert "\n" not in err.message and "\n" not in err.hint
    for fragment in fragments:
        assert fragment in str(err), (fragment, str(err))  # message + hint
    assert str(path) in err.message


def test_folder_is_refused(tmp_path):
    folder = tmp_path / "probes.txt"
    folder.mkdir()
    with pytest.raises(ProbeError, match="is a folder"):
        probes.read_texts(folder)


def test_unreadable_file_is_refused(tmp_path, monkeypatch):
    path = _write(tmp_path, "secret.txt", "hello\n")

    import os

    from exporter import user_files

    real_open = os.open

    def denied(name, *args, **kwargs):
        if Path(name) == path:
            raise PermissionError(13, "Permission denied")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(user_files.os, "open", denied)  # chmod 0 does not stop root
    with pytest.raises(ProbeError, match="cannot read .*Permission denied"):
        probes.read_texts(path)


# ------------------------------------------------------------------------------------------- strata
def test_builtin_probes_each_carry_a_known_stratum_and_every_builtin_stratum_is_populated():
    texts, strata = probes.builtin_probes(), probes.builtin_strata()
    assert len(strata) == len(texts)
    counts = Counter(strata)
    builtin = {s for s in probes.STRATA if not s.startswith("tok_") and s != probes.USER_STRATUM}
    assert set(counts) == builtin, set(counts) ^ builtin
    assert min(counts.values()) >= 10, counts
    assert all(probes.STRATA[s] for s in probes.STRATA)  # each has its one-line description


UNCOVERED = {"Tibetan": r"[\u0f00-\u0fff]", "Ge'ez": r"[\u1200-\u137f]", "Canadian syllabics": r"[\u1400-\u167f]",
             "Telugu": r"[\u0c00-\u0c7f]"}  # fmt: skip


@pytest.mark.parametrize("script", sorted(UNCOVERED))
def test_uncovered_script_stratum_holds_each_script(script):
    pattern = re.compile(UNCOVERED[script])
    uncovered = [
        t for t, s in zip(probes.builtin_probes(), probes.builtin_strata(), strict=True) if s == "uncovered_script"
    ]
    assert sum(bool(pattern.search(t)) for t in uncovered) >= 2


def test_one_word_stratum_is_single_words_with_stopwords():
    words = [t for t, s in zip(probes.builtin_probes(), probes.builtin_strata(), strict=True) if s == "one_word"]
    assert all(len(w.split()) == 1 for w in words)
    assert {"the", "of", "and", "which"} <= set(words)


def test_user_file_is_its_own_stratum_unless_its_lines_name_one(tmp_path):
    n = probes.LIMITS["probe"].min_texts
    plain = probes.load_text_set(_write(tmp_path, "p.txt", "\n".join(f"text {i}" for i in range(n))), "probe")
    assert plain.strata is None and plain.labels() == ["user"] * n
    lines = [f'{{"text": "t{i}"' + (', "stratum": "code_logs"}' if i % 2 else "}") for i in range(n)]
    labelled = probes.load_text_set(_write(tmp_path, "p.jsonl", "\n".join(lines)), "probe")
    assert labelled.labels() == ["user", "code_logs"] * (n // 2)


def test_prompts_keep_each_texts_stratum():
    base = probes.load_text_set(None, "probe")
    both = probes.with_prompts(base, {"query": "query: ", "passage": "passage: "})
    assert both.labels() == base.labels() * 2 and len(both.labels()) == len(both.texts)


# -------------------------------------------------------------------------------- tokenizer probes
def test_tokenizer_probes_are_made_from_the_files_deterministically(tiny_model_dir, tmp_path):
    import shutil

    from exporter.quality import tokenizer_probes as tp

    texts, strata, record = tp.generate(tiny_model_dir)
    assert Counter(strata) == tp.COUNTS and record["counts"] == tp.COUNTS
    assert record["sha256"] == probes.texts_sha256(texts) and record["seed"] == tp.SEED
    assert len(set(texts)) == len(texts) and all(t.strip() for t in texts)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)  # the same files elsewhere: the same texts
    assert tp.generate(copy)[0] == texts
    assert tp.generate(copy, seed=tp.SEED + 1)[0] != texts

    tok = tp.load_tokenizer(tiny_model_dir)
    unk = tok.unk_token_id
    for text in (t for t, s in zip(texts, strata, strict=True) if s == "tok_unknown"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids.count(unk) >= 1 and ids.count(unk) >= len(ids) / 4, text
    lengths = [len(tok(t)["input_ids"]) for t, s in zip(texts, strata, strict=True) if s == "tok_max_length"]
    assert max(lengths) > record["max_length"] and min(lengths) >= record["max_length"] - 4, lengths


def test_probe_set_for_a_model_extends_only_the_builtin_set(tiny_model_dir, tmp_path):
    from exporter.quality import tokenizer_probes as tp

    base = probes.load_text_set(None, "probe")
    made = tp.for_model(base, tiny_model_dir)
    assert made.texts[: len(base.texts)] == base.texts and made.generated["n"] == len(made.texts) - len(base.texts)
    assert {"tok_vocab", "tok_random", "tok_unknown", "tok_max_length"} <= set(made.labels())
    again = tp.for_model(base, tiny_model_dir, record=made.generated)  # what verify does
    assert again.sha256 == made.sha256
    with pytest.raises(ProbeError, match="tokenizer-probes-v0"):
        tp.for_model(base, tiny_model_dir, record={**made.generated, "generator": "tokenizer-probes-v0"})
    n = probes.LIMITS["probe"].min_texts
    user = probes.load_text_set(_write(tmp_path, "u.txt", "\n".join(f"text {i}" for i in range(n))), "probe")
    assert tp.for_model(user, tiny_model_dir) == user
