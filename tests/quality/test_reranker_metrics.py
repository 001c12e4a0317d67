"""Reranker fidelity is judged on the scale of the reference scores, so it never cries wolf (issue 20, item 4).

Tiny rerankers at transformers' default init put every logit near zero, on both sides of it (the spread of
their scores is ~1e-5): ``score_rel_err_max`` (the error over the scores' range) failed their exact fp32
graphs on rounding alone. Each shape users ship is exported to ONNX and OpenVINO by the real pipeline and
must pass the default policy; ``compare_scores`` is checked on both sides of the line: an exact graph never
fails at any scale, a real error fails at every scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporter import manifest as mf
from exporter.quality import parity
from exporter.quality.parity import SCORE_SCALE_FLOOR, compare_scores
from tests.cli_runner import invoke
from tests.tiny_models import build_tiny_reranker

SHAPES = {
    "bert": {"family": "bert"},
    "electra": {"family": "electra"},
    "roberta": {"family": "roberta"},
    "st5-crossencoder-sigmoid": {"family": "bert", "sigmoid_cross_encoder": True, "seed": 1},
    "deberta-v2-nli": {"family": "deberta-v2", "num_labels": 3},
}
FAST = {"bert"}  # one shape in every run; the others export the same way (about 50-75 s each) and run slow


@pytest.fixture(scope="session")
def reranker(tmp_path_factory):
    """``get(shape)``: (source folder, artifact folder) of the shape exported to onnx and openvino, once."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(shape: str) -> tuple[Path, Path]:
        if shape not in done:
            root = tmp_path_factory.mktemp(f"rerank-{shape}")
            src = build_tiny_reranker(root / "model", **SHAPES[shape])
            out = root / "artifact"
            res = invoke("export", str(src), "--variants", "onnx,openvino", "--out", str(out), "--json")
            assert res.code in (0, 3), res.err  # 3: judged below, with the failures shown
            done[shape] = (src, out)
        return done[shape]

    return get


@pytest.mark.parametrize(
    "shape", [s if s in FAST else pytest.param(s, marks=pytest.mark.slow) for s in SHAPES], ids=list(SHAPES)
)
def test_exact_exports_of_near_zero_rerankers_pass(reranker, shape):
    from sentence_transformers import CrossEncoder
    from torch.nn import Identity

    src, out = reranker(shape)
    rng = np.random.default_rng(0)
    words = "what why cat sat mat rain sun cloud river city train book read open close model query passage".split()
    pairs = [(" ".join(rng.choice(words, 2)), " ".join(rng.choice(words, 9))) for _ in range(40)]
    logits = np.asarray(CrossEncoder(str(src), device="cpu", activation_fn=Identity()).predict(pairs))
    assert logits.min() < 0 < logits.max() and np.abs(logits).max() < 0.1  # near zero, both sides of it
    manifest = mf.load(out)
    assert manifest["model"]["kind"] == "cross-encoder"
    for v in manifest["variants"]:
        p = v["parity"]
        assert v["status"] == "passed", (v["id"], p["failures"])
        assert p["score_spread"] < SCORE_SCALE_FLOOR  # the floor, not the rounding, set the scale here
        assert "score_rel_err_max" not in p["threshold"] and p["threshold"]["score_spread_err_max"] == 1e-3


def _scores(n: int, scale: float, labels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, (n, labels)).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("scale", [1e-6, 1e-4, 1e-2, 1.0, 10.0])
@pytest.mark.parametrize("labels", [1, 3])
def test_exact_and_rounded_scores_never_fail_at_any_scale(scale, labels):
    lists = [list(range(i, i + 10)) for i in range(0, 320, 10)]
    ref = _scores(320, scale, labels)
    rounded = (ref.astype(np.float32) * np.float32(1 + 2**-23)).astype(np.float64)  # one ulp off, as fp32 graphs are
    for cand in (ref.copy(), rounded):
        m = compare_scores(ref, cand, lists)
        verdict = parity.judge(m, parity.SCORE_THRESHOLDS["fp32"])
        assert verdict.passed, (scale, verdict.failures)


@pytest.mark.parametrize("scale", [1e-4, 1.0, 10.0])
def test_real_score_errors_fail_at_every_scale(scale):
    """An error of 1 % of the scores' spread (or of the floor, for near-constant scores) fails fp32, passes int8."""
    lists = [list(range(i, i + 10)) for i in range(0, 320, 10)]
    ref = _scores(320, scale)
    spread = max(float(np.percentile(ref, 99) - np.percentile(ref, 1)), SCORE_SCALE_FLOOR)
    cand = ref.copy()
    cand[5] += 0.01 * spread
    m = compare_scores(ref, cand, lists)
    assert m.score_spread_err_max == pytest.approx(0.01, rel=1e-6)
    assert any(f.startswith("score_spread_err_max") for f in parity.judge(m, parity.SCORE_THRESHOLDS["fp32"]).failures)
    assert "score_spread_err_max" not in " ".join(parity.judge(m, parity.SCORE_THRESHOLDS["int8"]).failures)
