"""The fidelity search's calibration samples derived from a model's own tokenizer.

The same generator as the tokenizer-derived probes (:func:`exporter.quality.tokenizer_probes.generate`: single
vocabulary tokens, random token runs, unknown-token runs, inputs at and past ``max_seq_length``), with a seed of
its own (``CALIBRATION_SEED``, never the probes' ``tokenizer_probes.SEED``): the search calibrates on the kinds
of text a model's edge cases are made of, never on a probe text.
"""

from __future__ import annotations

from exporter.quality import tokenizer_probes

CALIBRATION_SEED = 0x5EA4C4  # the search's calibration samples; the probe generator uses tokenizer_probes.SEED
assert CALIBRATION_SEED != tokenizer_probes.SEED


def calibration_labelled(ctx) -> list[tuple[str, str]]:
    """The tokenizer-derived calibration texts for the export ``ctx`` (a BuildContext), from its pinned files,
    each with its stratum (``tok_vocab``, ``tok_random``, ...), less any text the probes' seed also draws (a
    small vocabulary repeats single tokens): never a probe text."""

    def draw(seed: int) -> tuple[list[str], list[str]]:
        texts, strata, _ = tokenizer_probes.generate(
            ctx.source_dir,
            ctx.settings.max_seq_length,
            seed,
            trust_remote_code=ctx.settings.trust_remote_code,
        )
        return texts, strata

    probes = set(draw(tokenizer_probes.SEED)[0])
    return [(t, s) for t, s in zip(*draw(CALIBRATION_SEED), strict=True) if t not in probes]


def calibration_samples(ctx) -> list[str]:
    """The texts of :func:`calibration_labelled`."""
    return [t for t, _ in calibration_labelled(ctx)]
