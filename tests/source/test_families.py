"""One tiny model per architecture family of the support registry's family rules (``exporter.support``,
rules ``<model_type>-any-pooling``; BERT, MPNet, XLM-R, ModernBERT, T5 and bidirectional Gemma3 are built in
tests/test_shapes.py): every encoder family optimum exports and every decoder family transformers 4.57 ships
with a base model class and SDPA.

Each model concatenates all six Pooling modes (so mean, CLS, max, last-token, mean_sqrt_len_tokens and
weightedmean are all in one embedding) and ends with a Dense (tanh, bias); decoders are padded left or right
(both sides appear among them). Each is exported through the real pipeline with ``onnx`` (+ ``onnx-o2`` where
the row allows it) and ``openvino``, gated by the export, then served in ONE fresh process through
sentence-transformers (every variant) and the torch-free runtime (every ONNX graph) and compared with torch.

Also: the refusals a user meets before any model is loaded (a model_type outside every rule, an unknown or
word-vector module in modules.json), each one line with exit 2.
"""

from __future__ import annotations

import json
import time

import pytest

from exporter import support
from tests.cli_runner import invoke
from tests.fresh_serving import check_fresh, model_prompts
from tests.source.test_shapes import ALL_MODES, _export, _probe
from tests.tiny_models import build_tiny_embedder, build_tiny_word_embeddings

DENSE = ((24, True, "tanh"),)
# Row id -> build_tiny_embedder keyword arguments (family, padding side).
FAMILY_MODELS: dict[str, dict] = {
    "roberta-any-pooling": {"family": "roberta"},
    "distilbert-any-pooling": {"family": "distilbert", "normalize": False},
    "electra-any-pooling": {"family": "electra"},
    "deberta-v2-any-pooling": {"family": "deberta-v2", "normalize": False},
    "llama-any-pooling": {"family": "llama", "padding_side": "right"},
    "mistral-any-pooling": {"family": "mistral", "padding_side": "left"},
    "qwen2-any-pooling": {"family": "qwen2", "padding_side": "left"},
    "qwen3-any-pooling": {"family": "qwen3", "padding_side": "left"},
    "phi3-any-pooling": {"family": "phi3", "padding_side": "left"},
    "gemma2-any-pooling": {"family": "gemma2", "padding_side": "right", "normalize": False},
    "gemma3_text-any-pooling": {"family": "gemma3-causal", "padding_side": "right"},  # a causal Gemma3 decoder
}
EXERCISED_SHAPES = (*FAMILY_MODELS, "word-vectors")
TESTED_VARIANTS = ("onnx", "onnx-o2", "openvino")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("families")
    probe = _probe(root)
    done: dict[str, dict] = {}
    for row, kwargs in FAMILY_MODELS.items():
        src = build_tiny_embedder(root / row / "src", pooling=ALL_MODES, dense=DENSE, seed=len(done), **kwargs)
        assert not model_prompts(src)
        variants = [v for v in TESTED_VARIANTS if v in support.BY_ID[row].allowed()]
        start = time.perf_counter()
        manifest = _export(src, root / row / "art", probe, variants)
        print(f"[families] {row}: {time.perf_counter() - start:.1f}s", flush=True)
        done[row] = {"src": src, "art": root / row / "art", "manifest": manifest, "variants": variants}
    return done


@pytest.fixture(scope="module")
def fresh(built, fresh_server, tmp_path_factory):
    return fresh_server.serve(built, tmp_path_factory.mktemp("families-fresh"))  # the process test_shapes uses


@pytest.mark.slow
@pytest.mark.parametrize("row", list(FAMILY_MODELS))
def test_family_exports_and_serves_in_a_fresh_process(row, built, fresh):
    b = built[row]
    assert [v["id"] for v in b["manifest"]["variants"]] == b["variants"]
    assert all(v["status"] == "passed" for v in b["manifest"]["variants"])
    assert b["manifest"]["model"]["shape"]["support_rows"] == [row]
    onnx = sum(v.startswith("onnx") for v in b["variants"])
    assert check_fresh(row, built, fresh) == 2 * onnx + 1  # (ST + runtime) per ONNX graph, ST for openvino
    ov = next(v for v in b["manifest"]["variants"] if v["id"] == "openvino")
    why = support.BY_ID[row].openvino_why  # the rule's OpenVINO route: optimum-intel, or the traced graph and why
    assert ov["build"].get("why_not_optimum_intel", "") == why


def test_every_decoder_the_issue_names_has_a_rule():
    """Llama, Mistral, Qwen2, Qwen3, Gemma2/3 and Phi-3 base models, and the encoders optimum exports."""
    covered = {mt for r in support.RULES if not r.remote_code for mt in r.model_types}
    decoders = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"}
    encoders = {"bert", "roberta", "distilbert", "electra", "deberta-v2", "mpnet", "xlm-roberta", "modernbert", "t5"}
    assert decoders | encoders <= covered


# --- bad input: one line naming it, exit 2, before any model is loaded -----------------------------------------


def _one_error_line(err: str) -> bool:
    """The error is one line (progress lines such as "✓ Resolving source" may precede it), and no model loaded."""
    lines = err.strip().splitlines()
    return (
        len([line for line in lines if line.startswith("Error:")]) == 1
        and lines[-1].startswith("Error:")
        and ("Loading" not in err)
    )


def test_model_type_outside_every_rule_is_refused_naming_it(tiny_model_copy, tmp_path):
    config = json.loads((tiny_model_copy / "config.json").read_text())
    config.update(model_type="funnel", architectures=["FunnelModel"])
    (tiny_model_copy / "config.json").write_text(json.dumps(config))
    result = invoke("export", str(tiny_model_copy), "--variants", "onnx", "--out", str(tmp_path / "a"))
    assert result.code == 2 and not (tmp_path / "a").exists()
    assert "FunnelModel (model_type funnel) is outside every support rule" in result.err
    assert _one_error_line(result.err)


def test_unknown_module_is_refused_naming_it(tiny_model_copy, tmp_path):
    modules = json.loads((tiny_model_copy / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "", "type": "my_package.Whitening"})
    for i, m in enumerate(modules):
        m["idx"] = i
    (tiny_model_copy / "modules.json").write_text(json.dumps(modules))
    result = invoke("export", str(tiny_model_copy), "--variants", "onnx", "--out", str(tmp_path / "a"))
    assert result.code == 2 and "needs trust_remote_code" in result.err and "my_package.Whitening" in result.err
    assert _one_error_line(result.err) and not (tmp_path / "a").exists()
    args = ("--variants", "onnx", "--trust-remote-code", "--out", str(tmp_path / "b"))
    trusted = invoke("export", str(tiny_model_copy), *args)  # its code is trusted; the graph still cannot hold it
    assert trusted.code == 2 and "module 2 (after Pooling) is my_package.Whitening" in trusted.err
    assert _one_error_line(trusted.err) and not (tmp_path / "b").exists()


def test_word_embeddings_model_is_refused_by_its_module_not_called_incomplete(tmp_path):
    """A GloVe-style model (WordEmbeddings + WhitespaceTokenizer -> Pooling) has no tokenizer.json and is
    complete: the refusal names the module."""
    src = build_tiny_word_embeddings(tmp_path / "glove")
    result = invoke("export", str(src), "--out", str(tmp_path / "a"))
    assert result.code == 2 and not (tmp_path / "a").exists()
    assert "module 0 is sentence_transformers.models.WordEmbeddings" in result.err
    assert "WhitespaceTokenizer" in result.err and "no tokenizer" not in result.err
    assert _one_error_line(result.err)
