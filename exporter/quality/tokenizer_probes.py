"""Probe texts derived from a model's own tokenizer: its edge cases, not only English ones.

Generated at export time from the pinned tokenizer files, deterministically, and appended to the built-in
probe set in four strata (``exporter.quality.probes.STRATA``):

- ``tok_vocab``: single vocabulary tokens, sampled (word-continuation pieces such as ``##ing`` and
  placeholder tokens such as ``[unused7]`` left out);
- ``tok_random``: random sequences of 2 to 32 vocabulary tokens;
- ``tok_unknown``: runs of "words" made of characters the tokenizer maps to its unknown token, taken from
  the fixed table ``UNCOVERED_RANGES`` (letters of scripts many vocabularies lack); half of them mixed
  with a few vocabulary tokens. A tokenizer without an unknown token (byte-level BPE) gets the characters
  it splits into the most tokens instead;
- ``tok_max_length``: random token sequences at the model's ``max_seq_length`` (re-encoded and cut to fit
  exactly) and at twice it (past it: the model truncates).

Every text is decoded back to text, so every consumer (torch, ONNX, OpenVINO, the JS runtime) sees text.
Randomness comes from sha256 of ``(seed, stream, counter)``, not from a library's generator, so the same
files, seed and generator version give the same texts with any Python or numpy (the tokenizer library's
decode must agree too: ``record`` keeps the texts' sha256, and verify says when a regeneration differs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from exporter.errors import ProbeError

GENERATOR = "tokenizer-probes-v1"  # bump when anything below changes what is generated
SEED = 20
COUNTS: dict[str, int] = {"tok_vocab": 24, "tok_random": 24, "tok_unknown": 16, "tok_max_length": 8}
RANDOM_MAX_TOKENS = 32

# Letters (no combining marks: BERT-style normalisers strip them) of scripts many vocabularies lack, as
# fixed code point ranges (assigned since Unicode 3-4): the candidates for unknown-token runs.
UNCOVERED_RANGES: tuple[tuple[str, int, int], ...] = (
    ("tibetan", 0x0F40, 0x0F47),
    ("ethiopic", 0x1200, 0x1246),
    ("canadian-syllabics", 0x1401, 0x166C),
    ("telugu", 0x0C15, 0x0C28),
    ("sinhala", 0x0D9A, 0x0DB1),
    ("myanmar", 0x1000, 0x1021),
    ("khmer", 0x1780, 0x17A2),
    ("cherokee", 0x13A0, 0x13F4),
    ("mongolian", 0x1820, 0x1877),
    ("yi", 0xA000, 0xA48C),
    ("runic", 0x16A0, 0x16EA),
    ("thaana", 0x0780, 0x07A5),
    ("georgian", 0x10D0, 0x10F0),
    ("armenian", 0x0531, 0x0556),
)


class _Draws:
    """Deterministic integers from sha256(seed, stream, counter): reproducible in any language."""

    def __init__(self, seed: int, stream: str) -> None:
        self.prefix = f"{GENERATOR}:{seed}:{stream}:".encode()
        self.i = 0

    def below(self, n: int) -> int:
        self.i += 1
        digest = hashlib.sha256(self.prefix + str(self.i).encode()).digest()
        return int.from_bytes(digest[:8], "big") % n

    def pick(self, items: list):
        return items[self.below(len(items))]


def load_tokenizer(folder: Path, trust_remote_code: bool = False):
    """The model's tokenizer from its files: the Transformer module's folder, else the first module folder
    holding tokenizer files (a StaticEmbedding keeps its own)."""
    from transformers import AutoTokenizer

    from exporter.builders.kit import transformer_dir

    folder = Path(folder)
    candidates = [transformer_dir(folder)]
    modules = folder / "modules.json"
    if modules.is_file():
        candidates += [folder / m["path"] for m in json.loads(modules.read_text("utf-8")) if m.get("path")]
    found = [p for p in dict.fromkeys(candidates) if any((p / n).is_file() for n in _TOKENIZER_FILES)]
    if not found:
        raise ProbeError(
            f"no tokenizer files in {folder} to derive its probe texts from.",
            "Check that the model folder holds its tokenizer (tokenizer.json or tokenizer_config.json).",
        )
    try:
        return AutoTokenizer.from_pretrained(str(found[0]), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if (found[0] / "tokenizer.json").is_file():  # a bare tokenizers file (StaticEmbedding): no config
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast(tokenizer_file=str(found[0] / "tokenizer.json"))
        raise ProbeError(
            f"cannot load the tokenizer from {found[0]} to derive its probe texts: {exc}.",
            "Check that the model folder holds its tokenizer files.",
        ) from exc


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model")


def max_length_of(folder: Path, tokenizer, override: int | None = None) -> int:
    """The tokens per input the model takes: the override, sentence_bert_config.json's max_seq_length, else
    the tokenizer's model_max_length capped by config.json's max_position_embeddings (else 512)."""
    if override:
        return int(override)
    folder = Path(folder)
    st = folder / "sentence_bert_config.json"
    if st.is_file():
        value = json.loads(st.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    cap = 512
    cfg = folder / "config.json"
    if cfg.is_file():
        cap = int(json.loads(cfg.read_text()).get("max_position_embeddings") or cap)
    tmax = getattr(tokenizer, "model_max_length", None)
    return int(min(tmax, cap)) if isinstance(tmax, int) and tmax > 0 else cap


def _vocabulary(tok) -> tuple[list[int], list[int]]:
    """Ids usable as text (no special or placeholder tokens, non-blank) and those that start a word."""
    special = set(tok.all_special_ids)
    tokens = tok.convert_ids_to_tokens(list(range(len(tok))))
    usable, starts = [], []
    for i, t in enumerate(tokens):
        if i in special or t is None or not t.strip() or t.startswith(("[unused", "<unused", "<extra_id")):
            continue
        usable.append(i)
        if not t.startswith("##"):
            starts.append(i)
    return usable, starts


def _decode(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()


def _uncovered_letters(tok) -> dict[str, list[str]]:
    """Per script of ``UNCOVERED_RANGES``: its letters the tokenizer maps to the unknown token alone, or (no
    unknown token, or none mapped to it) the letters split into the most tokens."""
    chars = [(name, chr(cp)) for name, lo, hi in UNCOVERED_RANGES for cp in range(lo, hi + 1)]
    ids = tok([c for _, c in chars], add_special_tokens=False)["input_ids"]
    unk = tok.unk_token_id
    out: dict[str, list[str]] = {}
    if unk is not None:
        for (name, c), seq in zip(chars, ids, strict=True):
            if seq and all(i == unk for i in seq):
                out.setdefault(name, []).append(c)
    if not out:
        most = max(len(seq) for seq in ids)
        for (name, c), seq in zip(chars, ids, strict=True):
            if len(seq) == most:
                out.setdefault(name, []).append(c)
    return out


def generate(
    folder: Path, max_length: int | None = None, seed: int = SEED, *, trust_remote_code: bool = False
) -> tuple[list, list, dict]:
    """``(texts, strata, record)`` derived from the tokenizer in ``folder`` (see the module doc).

    Raises:
        ProbeError: the tokenizer cannot be loaded, or has no vocabulary usable as text.
    """
    tok = load_tokenizer(folder, trust_remote_code)
    max_length = max_length_of(folder, tok, max_length)
    tok.model_max_length = 1 << 30  # texts past the window are the point here: no warning per text
    usable, starts = _vocabulary(tok)
    if not usable:
        raise ProbeError(f"the tokenizer in {folder} has no vocabulary tokens usable as text.", "")
    starts = starts or usable
    texts: list[str] = []
    strata: list[str] = []

    def add(stratum: str, make) -> None:
        draws = _Draws(seed, stratum)
        made, tries = 0, 0
        while made < COUNTS[stratum] and tries < 20 * COUNTS[stratum]:
            tries += 1
            text = make(draws)
            if text.strip() and text not in texts:
                texts.append(text)
                strata.append(stratum)
                made += 1

    add("tok_vocab", lambda d: _decode(tok, [d.pick(starts)]))

    def sequence(d: _Draws, n: int) -> list[int]:  # starts with a word, so no text opens with "##"
        return [d.pick(starts)] + [d.pick(usable) for _ in range(n - 1)]

    add("tok_random", lambda d: _decode(tok, sequence(d, 2 + d.below(RANDOM_MAX_TOKENS - 1))))
    letters = _uncovered_letters(tok)
    scripts = sorted(letters)

    def unknown_run(d: _Draws) -> str:
        script = letters[d.pick(scripts)]
        words = ["".join(d.pick(script) for _ in range(2 + d.below(5))) for _ in range(1 + d.below(6))]
        if d.below(2):  # mostly unknown: a few vocabulary tokens among the words
            for _ in range(1 + d.below(3)):
                words.insert(d.below(len(words) + 1), _decode(tok, [d.pick(starts)]))
        return " ".join(words)

    if scripts:
        add("tok_unknown", unknown_run)
    room = max(1, max_length - len(tok("")["input_ids"]))  # the window less the special tokens

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def long_text(d: _Draws) -> str:
        if d.below(2):  # past the window: the model truncates it
            return _decode(tok, sequence(d, 2 * room))
        words: list[str] = []  # at the window: whole vocabulary words until the text re-encodes to fill it
        total = 0
        while total < room:
            words.append(_decode(tok, [d.pick(starts)]))
            total += max(1, count(words[-1]))
        while len(words) > 1 and count(" ".join(words)) > room:
            words.pop()
        return " ".join(words)

    add("tok_max_length", long_text)
    record = {
        "generator": GENERATOR,
        "seed": seed,
        "max_length": max_length,
        "n": len(texts),
        "sha256": _sha(texts),
        "counts": {s: strata.count(s) for s in COUNTS},
    }
    return texts, strata, record


def _sha(texts: list[str]) -> str:
    from exporter.quality.probes import texts_sha256

    return texts_sha256(texts)


def for_model(
    base,
    folder: Path,
    *,
    max_length: int | None = None,
    prompts=None,
    record: dict | None = None,
    trust_remote_code: bool = False,
):
    """The probe set a model is judged on, at export and at verify alike: ``base`` (a ``TextSet``) with, when
    it is the built-in set, the tokenizer-derived probes of ``folder`` appended (``TextSet.extended``), then
    once per prompt (``probes.with_prompts``). A user's file is judged as given.

    ``record``: the ``generated`` entry of an export's manifest; verify passes it to re-make exactly that
    set (same generator version, seed and length). ProbeError when it names another generator version.
    """
    from exporter.quality import probes

    if base.source.startswith("builtin:"):
        seed = SEED
        if record is not None:
            if record.get("generator") != GENERATOR:
                raise ProbeError(
                    f"the artifact's tokenizer probes were made by {record.get('generator')!r}; this exporter "
                    f"makes {GENERATOR!r}.",
                    "Verify with the exporter version that exported it, or re-export.",
                )
            seed, max_length = int(record["seed"]), record.get("max_length")
        texts, strata, made = generate(folder, max_length, seed, trust_remote_code=trust_remote_code)
        base = base.extended(texts, strata, made)
    return probes.with_prompts(base, prompts)
