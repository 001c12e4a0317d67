"""Rules of the support registry (``exporter.support``), each on a tiny model of its family: exported through the real
pipeline with ``onnx,onnx-o2,openvino`` (those the row allows), then loaded in ONE fresh process through
sentence-transformers (every variant) and the torch-free runtime (every ONNX graph) and compared with torch.

Also: every Pooling mode with left and right padding, Dense chains, ``include_prompt: false`` with prompts,
Matryoshka ``truncate_dim``, refusals (remote code, unsupported chains, refused variants) and the fp16
overflow of a Gemma with large activations.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from exporter import support
from exporter.errors import UsageError
from tests.builders.test_onnx import TEXTS
from tests.cli_runner import invoke
from tests.fresh_serving import check_fresh
from tests.tiny_models import build_tiny_embedder

TESTED_VARIANTS = ("onnx", "onnx-o2", "openvino")
GEMMA_DENSE = ((64, False, "identity"), (32, False, "identity"))

# Rule id -> a tiny model of that family (tests.tiny_models.build_tiny_embedder keyword arguments); the other
# family rules, all six Pooling modes at once, are tests/test_families.py's.
SHAPE_MODELS: dict[str, dict] = {
    "bert-any-pooling": {"family": "bert", "pooling": "cls", "dense": ((24, True, "tanh"),)},
    "mpnet-any-pooling": {"family": "mpnet"},
    "xlm-roberta-any-pooling": {"family": "xlm-roberta"},
    "modernbert-any-pooling": {"family": "modernbert", "pooling": "cls", "normalize": False},
    "t5-any-pooling": {"family": "t5", "dense": ((32, False, "identity"),)},
    "gemma3_text-any-pooling": {"family": "gemma3", "dense": GEMMA_DENSE},  # bidirectional, as EmbeddingGemma
}
REFUSED_ROWS = ("remote-code-nomic-bert",)
EXERCISED_SHAPES = (*SHAPE_MODELS, *REFUSED_ROWS)

# Chain variants on BERT: all six Pooling modes at once (concatenated), each padding side, prompts left out of
# pooling, Dense with and without bias; one Matryoshka width.
ALL_MODES = ["mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens", "weightedmean"]
PROMPTS = {"query": "query: what is the ", "passage": "passage: "}
CHAIN_MODELS: dict[str, dict] = {
    f"all-modes-{side}": {
        "family": "bert",
        "pooling": ALL_MODES,
        "padding_side": side,
        "prompts": PROMPTS,
        "include_prompt": False,
        "normalize": False,
    }
    for side in ("right", "left")
} | {
    "two-dense-prompt": {
        "family": "bert",
        "dense": ((40, True, "tanh"), (16, False, "identity")),
        "prompts": PROMPTS,
        "include_prompt": False,
    },
}
TRUNCATE = ("bert-any-pooling", 8)  # (tiny model, truncate_dim)


def _probe(root: Path) -> Path:
    """A small probe set: the export's parity gate is exercised, on fewer texts than the default set."""
    path = root / "probe.txt"
    words = "the quick brown fox jumps over lazy dog model export graph vector search rain city".split()
    lines = [" ".join(words[i % 7 : i % 7 + 2 + i % 9]) for i in range(40)] + ["東京 city", "a"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _export(src: Path, out: Path, probe: Path, variants: list[str], truncate_dim: int | None = None) -> dict:
    from exporter.pipeline import ExportPlan, raise_for_failures, run_export

    plan = ExportPlan(model=str(src), variants=variants, out=out, probe=probe, truncate_dim=truncate_dim)
    outcome = run_export(plan)
    raise_for_failures(outcome)
    return outcome.manifest


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, dict]:
    """Every row's and chain's tiny model exported once: name -> {src, art, manifest, variants, prompts}."""
    root = tmp_path_factory.mktemp("shapes")
    probe = _probe(root)
    models = {**SHAPE_MODELS, **CHAIN_MODELS}
    done: dict[str, dict] = {}
    for name, kwargs in models.items():
        src = build_tiny_embedder(root / name / "src", seed=len(done), **kwargs)
        if name in SHAPE_MODELS:
            variants = [v for v in TESTED_VARIANTS if v in support.BY_ID[name].allowed()]
        else:  # chain variants: ST's OpenVINO backend pools in torch exactly as its ONNX backend does
            variants = ["onnx", "onnx-o2"] if name == "two-dense-prompt" else ["onnx"]
        start = time.perf_counter()
        manifest = _export(src, root / name / "art", probe, variants)
        print(f"[shapes] {name}: {time.perf_counter() - start:.1f}s", flush=True)
        done[name] = {"src": src, "art": root / name / "art", "manifest": manifest, "variants": variants}
    name, dim = TRUNCATE
    art = root / f"{name}-truncated"
    manifest = _export(done[name]["src"], art, probe, ["onnx", "openvino"], truncate_dim=dim)
    done[f"{name}-truncated"] = {"src": done[name]["src"], "art": art, "manifest": manifest, "truncate_dim": dim}
    done[f"{name}-truncated"]["variants"] = ["onnx", "openvino"]
    return done


@pytest.fixture(scope="module")
def fresh(built, fresh_server, tmp_path_factory) -> dict[str, np.ndarray]:
    """Embeddings from a fresh process (``tests.fresh_serving``, shared with test_families): every built
    variant through sentence-transformers, every ONNX graph through the torch-free runtime, without and
    with each prompt."""
    return fresh_server.serve(built, tmp_path_factory.mktemp("fresh"))


@pytest.mark.parametrize("row", list(SHAPE_MODELS))
def test_row_exports_and_serves_in_a_fresh_process(row, built, fresh):
    b = built[row]
    assert [v["id"] for v in b["manifest"]["variants"]] == b["variants"]
    assert all(v["status"] == "passed" for v in b["manifest"]["variants"])
    assert row in b["manifest"]["model"]["shape"]["support_rows"]
    assert check_fresh(row, built, fresh) == 2 * sum(v.startswith("onnx") for v in b["variants"]) + sum(
        v.startswith("openvino") for v in b["variants"]
    )


def test_dense_weights_are_carried_and_only_the_transformer_weights_are_not(built):
    for row in ("bert-any-pooling", "gemma3_text-any-pooling"):
        src, art = built[row]["src"], built[row]["art"]
        dense = sorted(p.relative_to(src).as_posix() for p in src.glob("*_Dense/model.safetensors"))
        assert dense and all((art / rel).read_bytes() == (src / rel).read_bytes() for rel in dense)
        assert not (art / "model.safetensors").exists()  # the transformer is in the graphs
        shared = {f["path"] for f in built[row]["manifest"]["shared_files"]}
        assert set(dense) <= shared


@pytest.mark.parametrize("name", list(CHAIN_MODELS))
def test_pooling_modes_padding_prompts_and_dense_chains(name, built, fresh):
    import onnx

    b = built[name]
    graph = onnx.load(str(b["art"] / "onnx" / "model.onnx"), load_external_data=False).graph
    assert "prompt_length" in {i.name for i in graph.input} and "prompt_length" in {t.name for t in graph.initializer}
    assert b["manifest"]["variants"][0]["build"]["prompt_length_input"] is True
    # 3 prompts ("" and two) x (ST onnx backend, runtime) per ONNX graph
    assert check_fresh(name, built, fresh) == 3 * 2 * len(b["variants"])


def test_prompt_tokens_really_are_left_out(built, fresh):
    """The check above could pass if prompts changed nothing: they change the embedding by a lot here."""
    name = "all-modes-left"
    with_prompt = fresh[f"{name}|onnx|runtime|{PROMPTS['query']}"]
    pooled_with_prompt = _torch_prompt_as_text(built[name]["src"], PROMPTS["query"])
    assert np.abs(with_prompt - pooled_with_prompt).max() > 1e-2


def _torch_prompt_as_text(src: Path, prompt: str) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(src), device="cpu")
    return np.asarray(model.encode([prompt + t for t in TEXTS], prompt="", batch_size=3), dtype=np.float64)


def test_truncate_dim_is_in_the_graph_the_manifest_and_the_load_options(built, fresh):
    import onnx

    row, dim = TRUNCATE
    b = built[f"{row}-truncated"]
    graph = onnx.load(str(b["art"] / "onnx" / "model.onnx"), load_external_data=False).graph
    out = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert out["sentence_embedding"] == ["batch_size", dim]
    assert b["manifest"]["model"]["truncate_dim"] == dim and b["manifest"]["model"]["embedding_dim"] == dim
    assert all(v["load"]["truncate_dim"] == dim for v in b["manifest"]["variants"])
    assert check_fresh(f"{row}-truncated", built, fresh) == 3


def test_truncate_dim_not_below_the_width_is_refused(tiny_model_dir, tmp_path):
    result = invoke("export", str(tiny_model_dir), "--truncate-dim", "32", "--out", str(tmp_path / "a"))
    assert result.code == 2 and "truncate_dim 32 is not below the model's embedding dimension 32" in result.err


# --- refusals: before anything heavy, one line naming the shape -----------------------------------------


def _remote_code_model(tiny_model_dir: Path, dest: Path, model_type: str = "nomic_bert") -> Path:
    shutil.copytree(tiny_model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(
        model_type=model_type,
        architectures=["NomicBertModel"],
        auto_map={"AutoModel": "nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertModel"},
    )
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_remote_code_row_is_refused_with_and_without_trust(tiny_model_dir, tmp_path):
    src = _remote_code_model(tiny_model_dir, tmp_path / "nomic")
    without = invoke("export", str(src), "--out", str(tmp_path / "a"))
    assert without.code == 2 and "trust_remote_code" in without.err
    trusted = invoke("export", str(src), "--trust-remote-code", "--out", str(tmp_path / "b"))
    assert trusted.code == 2, trusted.err
    assert "NomicBertModel (model_type nomic_bert) is not exportable: remote-code architecture" in trusted.err
    assert "Resolving" not in trusted.out and not (tmp_path / "b").exists()


def test_remote_code_of_an_unknown_model_type_names_what_is_exportable(tiny_model_dir, tmp_path):
    src = _remote_code_model(tiny_model_dir, tmp_path / "custom", model_type="my_custom_bert")
    result = invoke("export", str(src), "--trust-remote-code", "--out", str(tmp_path / "a"))
    assert result.code == 2
    assert "NomicBertModel (model_type my_custom_bert) is not exportable: remote-code architecture" in result.err
    assert f"Exportable model types: {', '.join(support.exportable_model_types('sentence-transformer'))}" in result.err
    assert "bert, deberta-v2, distilbert, electra, gemma2, gemma3_text, llama, mistral" in result.err


@pytest.mark.parametrize(
    ("edit", "message", "args"),
    [
        (
            lambda m: m.insert(1, {**m[1], "type": "sentence_transformers.models.LayerNorm"}),
            "module 1 (after Transformer) is sentence_transformers.models.LayerNorm",
            (),
        ),
        (  # jina-embeddings-v3's module: its code is trusted, the chain is still not one the graph can hold
            lambda m: m[0].update(type="custom_st.Transformer"),
            "module 0 (first) is custom_st.Transformer",
            ("--trust-remote-code",),
        ),
        (lambda m: m.pop(1), "module 1 (after Transformer) is sentence_transformers", ()),
    ],
)
def test_unsupported_chain_is_refused_naming_the_module(tiny_model_copy, tmp_path, edit, message, args):
    modules = json.loads((tiny_model_copy / "modules.json").read_text())
    edit(modules)
    for i, m in enumerate(modules):
        m["idx"] = i
    (tiny_model_copy / "modules.json").write_text(json.dumps(modules))
    result = invoke("export", str(tiny_model_copy), "--variants", "onnx", "--out", str(tmp_path / "a"), *args)
    assert result.code == 2 and message in result.err, result.err
    assert "OpenVINO" not in result.err and "exporter list-architectures" in result.err


def test_refused_variant_is_named_and_left_out_of_all(tmp_path):
    src = build_tiny_embedder(tmp_path / "qwen", "qwen3", pooling="lasttoken", padding_side="left")
    result = invoke("export", str(src), "--variants", "onnx,onnx-o2", "--out", str(tmp_path / "a"))
    assert result.code == 2
    assert "onnx-o2 refused for Qwen3Model (model_type qwen3)" in result.err and "ORTOptimizer" in result.err
    from exporter import variants

    facts = support.match(src, "sentence-transformer")
    all_specs = variants.select_for_kind("all", "sentence-transformer")
    kept = [s.id for s in support.apply(facts, all_specs, ["all"])]
    assert "onnx" in kept and "openvino" in kept and not set(kept) & set(support.ORT_OPTIMIZER_LEVELS)
    assert facts.rows == ("qwen3-any-pooling",) and facts.chain == ("Transformer", "Pooling", "Normalize")


# --- fp16 overflow: refused up front for Gemma's ONNX fp16, caught by the gate where it is not refused --------


def _max_activation(src: Path) -> float:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(src), device="cpu")
    features = model.preprocess(["the quick brown fox jumps over the lazy dog"])
    with torch.no_grad():
        out = model[0].auto_model(
            input_ids=features["input_ids"], attention_mask=features["attention_mask"], output_hidden_states=True
        )
    assert torch.isfinite(out.last_hidden_state).all()
    return max(float(h.abs().max()) for h in out.hidden_states)


@pytest.fixture(scope="module")
def loud_gemma(tmp_path_factory) -> Path:
    """A Gemma3 whose residual stream exceeds the fp16 range (65504), as real Gemma checkpoints' do."""
    src = build_tiny_embedder(
        tmp_path_factory.mktemp("loud") / "gemma", "gemma3", dense=GEMMA_DENSE, residual_gain=80000.0, seed=3
    )
    assert _max_activation(src) > 65504, "the model must overflow fp16 for these tests"
    return src


def test_gemma_fp16_onnx_is_refused_up_front(loud_gemma, tmp_path):
    result = invoke("export", str(loud_gemma), "--variants", "onnx-o4", "--out", str(tmp_path / "a"))
    assert result.code == 2
    assert "onnx-o4 refused for Gemma3TextModel (model_type gemma3_text)" in result.err and "fp16" in result.err
    assert not (tmp_path / "a").exists()


def test_gemma_openvino_fp16_computes_in_fp32_and_passes_the_gate(loud_gemma, tmp_path):
    """openvino-fp16 is allowed: weights are stored in fp16 (OpenVINO keeps out-of-range constants in fp32)
    and the manifest pins fp32 compute, so the overflowing residual stream stays finite; the gate checks it."""
    from exporter import manifest as mf

    out = tmp_path / "art"
    result = invoke("export", str(loud_gemma), "--variants", "openvino,openvino-fp16", "--out", str(out))
    assert result.code == 0, result.err
    fp16 = {v["id"]: v for v in mf.load(out)["variants"]}["openvino-fp16"]
    assert fp16["status"] == "passed" and fp16["parity"]["cosine_min"] >= 0.999
    assert fp16["load"]["model_kwargs"]["ov_config"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_fp16_overflow_is_caught_by_the_gate_and_never_shipped(tmp_path):
    """Where fp16 compute is not refused up front (BERT's onnx-o4), activations beyond 65504 give NaN: the
    gate fails the variant (exit 3) and the artifact is not publishable."""
    from exporter import manifest as mf

    src = build_tiny_embedder(tmp_path / "loud-bert", "bert", weight_scale=1000.0, seed=3)
    assert _max_activation(src) > 1000  # post-LayerNorm; the FFN's intermediate values exceed 65504
    out = tmp_path / "art"
    result = invoke("export", str(src), "--variants", "onnx,onnx-o4", "--out", str(out))
    assert result.code == 3, result.err
    m = mf.load(out)
    o4 = {v["id"]: v for v in m["variants"]}["onnx-o4"]
    assert o4["status"] == "failed" and "NaN" in o4["error"] and m["publishable"] is False


def test_truncate_dim_round_trips_through_a_recipe(tmp_path):
    from exporter.fleet.recipe_loading import parse_recipe
    from exporter.fleet.recipe_plan import plan_to_recipe, recipe_to_plan
    from exporter.pipeline import ExportPlan

    sha = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
    recipe = parse_recipe({"source": {"repo": "org/name", "revision": sha}, "truncate_dim": 256})
    plan = recipe_to_plan(recipe, tmp_path)
    assert plan.truncate_dim == 256
    assert plan_to_recipe(ExportPlan(model=f"org/name@{sha}", truncate_dim=256))["truncate_dim"] == 256


def test_both_module_spellings_pass_the_preflight(tmp_path):
    """ST >= 5.4 writes sentence_transformers.base.modules.dense.Dense ...; older models say
    sentence_transformers.models.Dense: both are the same chain."""
    from exporter.source import st_modules

    src = build_tiny_embedder(tmp_path / "legacy", **SHAPE_MODELS["bert-any-pooling"])
    modules = json.loads((src / "modules.json").read_text())
    assert modules[2]["type"] == "sentence_transformers.base.modules.dense.Dense"
    new = support.match(src, "sentence-transformer")
    for m in modules:
        m["type"] = "sentence_transformers.models." + m["type"].rsplit(".", 1)[-1]
    (src / "modules.json").write_text(json.dumps(modules))
    old = support.match(src, "sentence-transformer")
    assert old.chain == new.chain == ("Transformer", "Pooling", "Dense", "Normalize")
    assert [m.kind for m in st_modules.read(src).modules][2] is st_modules.ModuleKind.DENSE


def test_architecture_without_an_openvino_exporter_is_refused_for_openvino_only(tiny_model_copy):
    """Outside the registry's sentence-transformer rules a model is refused outright (tests/source/test_families.py);
    for the rules of any model_type (cross-encoders) an architecture optimum-intel cannot export has its openvino
    variants refused before loading anything, naming OpenVINO, and an ONNX-only export is not refused."""
    from exporter import variants

    config = json.loads((tiny_model_copy / "config.json").read_text())
    config.update(model_type="funnel", architectures=["FunnelModel"])
    (tiny_model_copy / "config.json").write_text(json.dumps(config))
    kind = "cross-encoder"
    facts = support.match(tiny_model_copy, kind)
    onnx_only = variants.select_for_kind(["onnx", "onnx-o2"], kind)
    assert support.apply(facts, onnx_only, ["onnx", "onnx-o2"]) == onnx_only
    with_ov = variants.select_for_kind(["onnx", "OpenVINO"], kind)
    with pytest.raises(UsageError, match="openvino refused for FunnelModel .*optimum-intel has no OpenVINO exporter"):
        support.apply(facts, with_ov, [" OpenVINO", "onnx"])  # the user's spelling is an id too
    kept = support.apply(facts, with_ov, ["best"])  # best is not a request by id
    assert [s.id for s in kept] == ["onnx"]


def test_a_reference_that_depends_on_padding_bounds_the_batch_gate(built):
    """BERT with left padding shifts its absolute positions by the padding: torch itself is batch-dependent,
    so the exact export is judged at the reference's own figure less the policy's allowance, and says so; a
    right-padded one is held to the policy's threshold unchanged."""
    left = built["all-modes-left"]["manifest"]["variants"][0]["parity"]
    right = built["all-modes-right"]["manifest"]["variants"][0]["parity"]
    inv, limit = left["batch_invariance"], left["threshold"]["batch_cosine_min"]
    assert inv["reference_cosine_min"] < limit and inv["judged_at"] < limit  # the reference is batch-dependent
    assert inv["judged_at"] == pytest.approx(inv["reference_cosine_min"] - (1 - limit))
    assert left["passed"] and left["batch_cosine_min"] >= inv["judged_at"]
    assert right["batch_invariance"]["judged_at"] == right["threshold"]["batch_cosine_min"] and right["passed"]
