"""EC key pairs for signing tests (P-256, PEM; the private key mode 600 as the signer requires)."""

from __future__ import annotations

from pathlib import Path


def make_keypair(folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.pem`` (private, mode 600) and ``NAME.pub`` into ``folder``; return both paths."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = folder / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private.chmod(0o600)
    public = folder / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public
