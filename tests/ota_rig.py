"""Shared by the OTA tests: release keys and bundles (synthetic ones for the power-cut harness,
real agent bundles for the end-to-end tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from host_tools.ota.keys import ReleaseKey
from host_tools.ota.release import pack


def make_key(d: Path, name: str = "release.json", lms_type: int = 5) -> ReleaseKey:
    """A small (32-signature) key: generation takes milliseconds."""
    key = ReleaseKey.generate(d / name, lms_type)
    (d / "release.pub").write_bytes(key.public())
    return key


def synthetic_bundle(
    key: ReleaseKey, version: str, nfiles: int, size: int, mpy: int, **extra
) -> bytes:
    """A signed bundle of `nfiles` made-up files (content depends on the version)."""
    seed = sum(map(ord, version))
    files = {
        f"edge/m{i}.mpy": bytes((seed + i * 7 + j) & 0xFF for j in range(size))
        for i in range(nfiles)
    }
    names = sorted(files)
    m = {
        "bundle": 1,
        "version": version,
        "mpy": mpy,
        "platform": "unix",
        "files": [[n, len(files[n]), hashlib.sha256(files[n]).hexdigest()] for n in names],
        **extra,
    }
    return pack(m, [files[n] for n in names], key)
