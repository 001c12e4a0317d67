"""Probe texts (what parity is measured on) and calibration texts (what static int8 is tuned on).

Built-in sets ship as ``exporter/data/probes.jsonl`` and ``exporter/data/calibration.jsonl``: one JSON
object per line, ``{"text": ..., "category": ..., "stratum": ...}`` (JSON keeps newlines, tabs and odd
unicode inside a text intact). The two sets share no text. Users may pass their own file:

- ``.txt``: one text per line (UTF-8, a BOM is ignored); lines that are empty or only whitespace are
  skipped; other lines are kept exactly, leading and trailing spaces included (only the line break
  goes).
- ``.jsonl``: one JSON value per line, either an object with a string ``"text"`` or a plain JSON
  string; blank lines are skipped; a text that is empty or only whitespace is refused.

Strata. Every probe text belongs to one stratum of ``STRATA`` (a closed table, name -> what it holds), and
every verdict shows the worst case per stratum. The built-in file labels each line; the probes derived from
the model's own tokenizer (``exporter.quality.tokenizer_probes``) carry the ``tok_*`` strata; a user's file
is the stratum ``user``, or per line the ``"stratum"`` its objects give (an unknown label is refused with
the list of known ones).

``texts_sha256`` identifies a set: the sha256 of the texts, in order, each encoded as a netstring
(``<UTF-8 byte length in decimal>:<UTF-8 bytes>,``) and concatenated. Netstrings make the digest
unambiguous whatever a text contains (newlines, separators) and easy to recompute in any language.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from exporter.errors import ProbeError, UsageError
from exporter.fsutil import sha256_bytes
from exporter.user_files import read_user_file

Kind = Literal["probe", "calibration"]

# The strata of the probe set: name -> what it holds (a closed set; a user's label must be one of these).
STRATA: dict[str, str] = {
    "prose_en": "natural English sentences, questions, passages, paraphrases and near-duplicates",
    "short_query": "search queries of one to a few words",
    "one_word": "one-token and one-word queries, stopwords and punctuation included",
    "prose_multilingual": "natural prose in many languages and scripts",
    "mixed_language": "texts mixing languages or scripts within one text",
    "uncovered_script": "scripts common vocabularies do not cover (mostly unknown tokens): Tibetan, Ge'ez, ...",
    "code_logs": "source code, log lines, stack traces, shell commands, URLs and paths",
    "numbers_symbols": "numbers, identifiers, emoji, maths, odd whitespace and unusual unicode",
    "long": "texts at and past the model's max_seq_length",
    "tok_vocab": "single vocabulary tokens of the model's own tokenizer (sampled)",
    "tok_random": "random sequences of the tokenizer's vocabulary tokens",
    "tok_unknown": "runs of characters the tokenizer maps to its unknown token (or splits into bytes)",
    "tok_max_length": "random token sequences at and past the model's max_seq_length",
    "user": "a user's --probe file whose lines give no stratum",
}
USER_STRATUM = "user"

BUILTIN_FILES: dict[str, str] = {"probe": "probes.jsonl", "calibration": "calibration.jsonl"}
BUILTIN_VERSION = 2  # bump when a built-in file changes (the sha256 changes with it anyway)
SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class TextLimits:
    """What a user's text file must hold to be used (the built-in sets meet these)."""

    min_texts: int
    max_chars: int  # per text


# Parity's neighbour agreement@10 ranks each text's 10 nearest others, so it needs more than 11 texts,
# and pairwise Spearman a spread of pairs: 20 is the fewest that measures anything. Static int8 takes
# activation ranges from the calibration texts: fewer than 10 give ranges of a handful of sentences. A
# text of more than 20,000 characters is far past any model's window (512 tokens is ~2,500 characters)
# and nearly always means the file is not one text per line.
LIMITS: dict[str, TextLimits] = {"probe": TextLimits(20, 20_000), "calibration": TextLimits(10, 20_000)}
# A user's text file is read whole, so it is capped before it is read (user_files.read_user_file): 4 MB and
# 20,000 lines are far past any probe or calibration set that runs in reasonable time.
TEXT_FILE_MAX_BYTES = 4_000_000
TEXT_FILE_MAX_LINES = 20_000


@dataclass(frozen=True)
class TextSet:
    """A named, hashed list of texts. ``source`` is ``builtin:<file>`` or the path a user gave."""

    name: str
    texts: list[str]
    sha256: str
    source: str
    strata: list[str] | None = None  # one ``STRATA`` name per text; None: every text is ``user``
    generated: dict | None = None  # the tokenizer-derived probes appended to it (``tokenizer_probes.record``)

    def labels(self) -> list[str]:
        """One stratum name per text."""
        return list(self.strata) if self.strata is not None else [USER_STRATUM] * len(self.texts)

    def extended(self, texts: list[str], strata: list[str], generated: dict) -> TextSet:
        """This set with ``texts`` (labelled ``strata``) appended; the name, hash and record follow."""
        all_texts = self.texts + list(texts)
        return TextSet(
            name=f"{self.name}+{generated['generator']}",
            texts=all_texts,
            sha256=texts_sha256(all_texts),
            source=self.source,
            strata=self.labels() + list(strata),
            generated=generated,
        )


def texts_sha256(texts: list[str] | tuple[str, ...]) -> str:
    """sha256 of the texts in order, each as a netstring ``<len>:<utf-8 bytes>,`` (see module doc)."""
    parts = []
    for text in texts:
        data = text.encode("utf-8")
        parts.append(b"%d:%s," % (len(data), data))
    return sha256_bytes(b"".join(parts))


# ------------------------------------------------------------------------------------------ built-in
@cache
def _builtin_lines(kind: str) -> tuple[_Line, ...]:
    name = BUILTIN_FILES[kind]
    data = resources.files("exporter").joinpath("data", name).read_bytes()
    return tuple(_parse_jsonl(_decode(data, f"built-in {name}"), f"built-in {name}"))


def _builtin_records(kind: str) -> tuple[tuple[str, str], ...]:
    return tuple((line.text, line.category or "") for line in _builtin_lines(kind))


def builtin_strata() -> list[str]:
    """The stratum of each built-in probe text, in file order."""
    return [line.stratum or USER_STRATUM for line in _builtin_lines("probe")]


def builtin_records(kind: Kind) -> list[tuple[str, str]]:
    """``(text, category)`` pairs of a built-in set, in file order."""
    _check_kind(kind)
    return list(_builtin_records(kind))


def builtin_probes() -> list[str]:
    """The built-in probe set (at least 300 diverse texts)."""
    return [t for t, _ in _builtin_records("probe")]


def builtin_calibration() -> list[str]:
    """The built-in calibration set (at least 300 texts, none of them in the probe set)."""
    return [t for t, _ in _builtin_records("calibration")]


# -------------------------------------------------------------------------------------------- files
def read_texts(path: Path) -> list[str]:
    """Texts of a user's ``.txt`` or ``.jsonl`` file (formats in the module doc)."""
    return read_labelled(path)[0]


def read_labelled(path: Path) -> tuple[list[str], list[str] | None]:
    """Texts of a user's ``.txt`` or ``.jsonl`` file and their strata (None when no line names one; lines
    that do not are ``user``).

    Raises:
        ProbeError: missing or unreadable file, unsupported extension, binary content (NUL bytes or
            not UTF-8), a malformed JSONL line (with its number), an unknown stratum label (with the known
            ones), or no texts at all.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists() and not path.is_symlink():
        raise ProbeError(
            f"text file {path} does not exist.", "Check the path, or omit the option to use the built-in set."
        )
    if path.is_dir():
        raise ProbeError(f"text file {path} is a folder, not a file.", "Pass the path of a .txt or .jsonl file.")
    if suffix not in SUFFIXES:
        raise ProbeError(
            f"text file {path} has an unsupported extension {path.suffix or '(none)'!r}.",
            'Use .txt (one text per line) or .jsonl (one {"text": ...} object per line).',
        )
    try:
        data = read_user_file(path, what="text file", max_bytes=TEXT_FILE_MAX_BYTES, max_lines=TEXT_FILE_MAX_LINES)
    except UsageError as exc:
        raise ProbeError(exc.message, exc.hint) from None
    text = _decode(data, f"text file {path}")
    strata = None
    if suffix == ".txt":
        texts = [line.removesuffix("\r") for line in text.split("\n")]
        texts = [t for t in texts if t.strip()]
    else:
        lines = _parse_jsonl(text, f"text file {path}")
        texts = [line.text for line in lines]
        if any(line.stratum for line in lines):
            strata = [line.stratum or USER_STRATUM for line in lines]
    if not texts:
        raise ProbeError(f"text file {path} has no texts (it is empty or only blank lines).", _FORMAT_HINT)
    return texts, strata


def load_text_set(path: Path | None, kind: Kind, *, min_texts: int | None = None) -> TextSet:
    """The built-in set of ``kind`` when ``path`` is None, else the user's file, named and hashed.

    A user's file must meet ``LIMITS[kind]`` (``min_texts`` overrides the count, e.g. for benchmarks,
    which time any number of texts), else ProbeError (exit 2) before anything heavy runs.
    """
    _check_kind(kind)
    if path is None:
        texts = builtin_probes() if kind == "probe" else builtin_calibration()
        return TextSet(
            name=f"builtin-{kind}-v{BUILTIN_VERSION}",
            texts=texts,
            sha256=texts_sha256(texts),
            source=f"builtin:{BUILTIN_FILES[kind]}",
            strata=builtin_strata() if kind == "probe" else None,
        )
    path = Path(path)
    texts, strata = read_labelled(path)
    _check_limits(texts, path, kind, min_texts)
    return TextSet(name=path.name, texts=texts, sha256=texts_sha256(texts), source=str(path), strata=strata)


def _check_limits(texts: list[str], path: Path, kind: str, min_texts: int | None) -> None:
    limits = LIMITS[kind]
    least = limits.min_texts if min_texts is None else min_texts
    if len(texts) < least:
        raise ProbeError(
            f"{kind} file {path} has {len(texts)} text(s); at least {least} are needed "
            f"(at most {limits.max_chars:,} characters each).",
            "Add texts (one per line), or omit the option to use the built-in set.",
        )
    for i, text in enumerate(texts, start=1):
        if len(text) > limits.max_chars:
            raise ProbeError(
                f"{kind} file {path}, text {i}: {len(text):,} characters, more than the {limits.max_chars:,} "
                f"allowed (and at least {least} texts are needed).",
                "Split it into shorter texts; check the file holds one text per line (.txt) or one JSON "
                "object per line (.jsonl).",
            )


# ------------------------------------------------------------------------------------------ helpers
_NUL = b"\x00"
_FORMAT_HINT = 'Give a UTF-8 .txt file with one text per line, or a .jsonl file with one {"text": ...} per line.'


def _check_kind(kind: str) -> None:
    if kind not in BUILTIN_FILES:
        raise ValueError(f"kind must be 'probe' or 'calibration', got {kind!r}")


def _decode(data: bytes, what: str) -> str:
    if _NUL in data:
        raise ProbeError(f"{what} looks binary (NUL byte at offset {data.index(_NUL)}).", _FORMAT_HINT)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProbeError(f"{what} is not valid UTF-8 (bad byte at offset {exc.start}).", _FORMAT_HINT) from None


@dataclass(frozen=True)
class _Line:
    text: str
    category: str | None = None
    stratum: str | None = None


def _parse_jsonl(text: str, what: str) -> list[_Line]:
    """One ``_Line`` per non-blank line; ProbeError naming the first bad line (or unknown stratum label)."""
    out: list[_Line] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProbeError(
                f"{what}, line {lineno}: not valid JSON ({exc.msg}).",
                'Write one JSON object per line, e.g. {"text": "..."}, with newlines escaped as \\n.',
            ) from None
        except RecursionError:
            raise ProbeError(
                f"{what}, line {lineno}: JSON nested too deeply to be a text record.",
                'Write one {"text": "..."} object (or one JSON string) per line.',
            ) from None
        category = stratum = None
        if isinstance(value, dict):
            category = value.get("category") if isinstance(value.get("category"), str) else None
            stratum = value.get("stratum")
            if stratum is not None and stratum not in STRATA:
                raise ProbeError(
                    f"{what}, line {lineno}: unknown stratum {stratum!r}.",
                    f"Use one of: {', '.join(STRATA)} (or leave it out: the line is then {USER_STRATUM!r}).",
                )
            value = value.get("text")
        if not isinstance(value, str):
            raise ProbeError(
                f'{what}, line {lineno}: expected an object with a string "text" or a JSON string.',
                'Write one {"text": "..."} object (or one JSON string) per line.',
            )
        if not value.strip():
            raise ProbeError(f"{what}, line {lineno}: the text is empty.", "Remove the line or give it a text.")
        out.append(_Line(value, category, stratum))
    return out


def with_prompts(text_set: TextSet, prompts: dict[str, str] | None) -> TextSet:
    """The set once per prompt, each text prefixed (e5's "query: " / "passage: "), for reference and variant.

    Models trained with prefixes are served with them, so fidelity is measured on prefixed texts; the
    hash covers the prefixed texts, so a change of prompts is a change of probe set.
    """
    if not prompts:
        return text_set
    texts = [prefix + text for prefix in prompts.values() for text in text_set.texts]
    names = "+".join(prompts)
    return TextSet(
        name=f"{text_set.name}[{names}]",
        texts=texts,
        sha256=texts_sha256(texts),
        source=text_set.source,
        strata=text_set.labels() * len(prompts),
        generated=text_set.generated,
    )
