"""The fidelity-and-speed attestation: an in-toto statement about one published variant.

``subject``: every file a pull writes (path + sha256, ``manifest.json`` included), so the statement binds
to the bytes whatever OCI encoding carries them. ``predicateType``: ``PREDICATE_TYPE``; the predicate holds
the pin, the variant, its parity result (cosine min/mean/p01, thresholds, verdict), its bench numbers
when measured, the probe set and the CPU it was measured on. The statement's JSON Schema is
``exporter/schema/fidelity-attestation.v1.schema.json``. It is signed like the files (a Sigstore bundle
with a DSSE envelope, model_signing's EC signer) and attached to the model manifest as an OCI referrer.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import jsonschema

from exporter.errors import IntegrityError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "urn:exporter:attestation:fidelity:v1"


@cache
def schema() -> dict:
    return json.loads(resources.files("exporter").joinpath("schema/fidelity-attestation.v1.schema.json").read_text())


def statement(narrowed: dict, files: list[dict], verdict) -> dict:
    """The statement for the (single) variant of ``narrowed``; ``files`` as ``modelpack.files_of`` gives;
    ``verdict`` (``sign_artifact.Gate``) is the gate run at signing: its parity and policy are attested, never
    the parity the manifest records."""
    v = narrowed["variants"][0]
    parity = dict(verdict.parity)
    passed = v["status"] == "passed" and bool(verdict.passed)
    env = narrowed.get("environment") or {}
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": r["path"], "digest": {"sha256": r["sha256"]}} for r in files],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "source": {"repo": narrowed["source"].get("repo"), "revision": narrowed["source"].get("revision")},
            "variant": {"id": v["id"], "backend": v["backend"], "precision": v["precision"], "status": v["status"]},
            "passed": passed,
            "parity": parity,
            "policy": dict(verdict.policy),
            "bench": v.get("bench"),
            "probe": narrowed.get("probe"),
            "cpu": env.get("cpu"),
            "tool_version": narrowed["tool_version"],
            "created_at": narrowed["created_at"],
        },
    }
    jsonschema.validate(doc, schema())
    return doc


def check(doc: dict, files: dict[str, str], where: str) -> dict:
    """The predicate of a verified statement, once it is schema-valid and its subjects are exactly ``files``."""
    try:
        jsonschema.validate(doc, schema())
    except jsonschema.ValidationError as exc:
        raise IntegrityError(
            f"{where} is not a valid fidelity attestation ({exc.message[:120]}).", "Refusing it."
        ) from exc
    subjects = {s["name"]: s["digest"]["sha256"] for s in doc["subject"]}
    if len(subjects) != len(doc["subject"]) or subjects != files:
        raise IntegrityError(f"{where} attests other files than the artifact holds.", "Refusing it.")
    return doc["predicate"]


def looser_than(predicate: dict, policy) -> list[str]:
    """The attested thresholds (those of the policy the signer's gate ran under; in attestations before that,
    the parity record's) that are looser than ``policy``'s (an ``exporter.quality.policy.Policy``) for this
    variant; an attestation that records none cannot show it meets the policy."""
    from exporter.quality.policy import kind_of_thresholds

    recorded = (predicate.get("policy") or {}).get("thresholds") or (predicate.get("parity") or {}).get("threshold")
    if not isinstance(recorded, dict) or not recorded:
        return ["it records no thresholds"]
    variant = predicate.get("variant") or {}
    return policy.looser_than(recorded, kind_of_thresholds(recorded), variant.get("precision"), variant.get("id"))


def summary(predicate: dict) -> str:
    """One line: verdict, cosine numbers, speed-up when benchmarked."""
    p = predicate.get("parity") or {}
    parts = [
        f"parity {'passed' if predicate.get('passed') else 'FAILED'}",
        *(f"{k} {p[k]:.5f}" for k in ("cosine_min", "cosine_mean") if isinstance(p.get(k), int | float)),
    ]
    ratios = (predicate.get("bench") or {}).get("ratio_to_torch") or {}
    if ratios:
        batch = max(ratios, key=lambda b: int(b) if str(b).isdigit() else 0)
        parts.append(f"{ratios[batch]:.2f}x torch at batch {batch}")
    return ", ".join(parts)
