"""`edgectl release` builds a signed bundle of the real agent; the device's installer
(edge/ota/install.py, under MicroPython) installs it and refuses a bad signature, a wrong hash,
a truncated bundle, a downgrade below the minimum and a bundle for another board."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from host_tools.cli import main as edgectl
from tests.conftest import ROOT, mp_json
from tests.ota_rig import make_key

MP_INSTALL = os.path.join(ROOT, "tests", "mp", "ota_install.py")


@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    d = tmp_path_factory.mktemp("release")
    make_key(d)
    assert (
        edgectl(
            [
                "release",
                "--board",
                "unix-sim",
                "--version",
                "1.1.0",
                "--key",
                str(d / "release.json"),
                "--out",
                str(d / "v110.bundle"),
            ]
        )
        == 0
    )
    assert (
        edgectl(
            [
                "release",
                "--board",
                "unix-sim",
                "--version",
                "1.0.5",
                "--min-version",
                "1.0.5",
                "--key",
                str(d / "release.json"),
                "--out",
                str(d / "v105.bundle"),
            ]
        )
        == 0
    )
    return d


def install(d, bundle_bytes, tmp, policy=None, size=None, sha=None, cut=None):
    p = tmp / "b.bundle"
    p.write_bytes(bundle_bytes)
    args = [
        str(tmp / "root"),
        str(p),
        str(d / "release.pub"),
        str(len(bundle_bytes) if size is None else size),
        sha or hashlib.sha256(bundle_bytes).hexdigest(),
        json.dumps(policy or {}),
    ]
    if cut is not None:
        args.append(str(cut))
    (tmp / "root").mkdir(exist_ok=True)
    return mp_json(MP_INSTALL, *args, heap="256K")


def test_release_check_and_install(rel, tmp_path, capsys, micropython):
    assert (
        edgectl(
            ["release", "--check", str(rel / "v110.bundle"), "--pub", str(rel / "release.pub")]
        )
        == 0
    )
    assert "signature valid" in capsys.readouterr().out
    data = (rel / "v110.bundle").read_bytes()
    r = install(rel, data, tmp_path)
    assert r == {"ok": True, "version": "1.1.0", "files": r["files"]} and r["files"] > 30
    # the installed slot holds the compiled agent, byte for byte
    m = json.loads(data[12 : 12 + int.from_bytes(data[6:8], "big")])
    name, size, digest = m["files"][0]
    got = (tmp_path / "root" / "ota" / "b" / name).read_bytes()
    assert len(got) == size and hashlib.sha256(got).hexdigest() == digest


def test_resume_after_a_reboot_mid_download(rel, tmp_path, micropython):
    data = (rel / "v110.bundle").read_bytes()
    r = install(rel, data, tmp_path, cut=len(data) // 2 + 100)
    assert r["ok"], r
    assert 0 < r["resumed_at"] <= len(data) // 2 + 100


def test_refusals_say_why(rel, tmp_path, micropython):
    data = (rel / "v110.bundle").read_bytes()
    mlen = int.from_bytes(data[6:8], "big")
    bad_sig = bytearray(data)
    bad_sig[12 + mlen + 40] ^= 1
    r = install(rel, bytes(bad_sig), tmp_path)
    assert not r["ok"] and r["error"].startswith("bad signature"), r
    bad_file = bytearray(data)
    bad_file[-10] ^= 1
    r = install(rel, bytes(bad_file), tmp_path)
    assert not r["ok"] and "does not match its manifest hash" in r["error"], r
    r = install(rel, data, tmp_path, sha="00" * 32)
    assert not r["ok"] and r["error"].startswith("wrong hash"), r
    r = install(rel, data[:-5000], tmp_path)
    assert not r["ok"] and r["error"].startswith("truncated bundle"), r
    r = install(rel, data, tmp_path, policy={"floor": "1.2.0"})
    assert not r["ok"] and r["error"].startswith(
        "downgrade: bundle 1.1.0 is below the minimum 1.2.0"
    ), r
    r = install(rel, data, tmp_path, policy={"current": "1.1.0"})
    assert not r["ok"] and r["error"].startswith("downgrade"), r
    r = install(rel, data, tmp_path, policy={"platform": "esp32"})
    assert not r["ok"] and r["error"].startswith("incompatible"), r
    # signed, but with another key
    other = tmp_path / "other"
    other.mkdir()
    make_key(other)
    r = mp_json(
        MP_INSTALL,
        str(tmp_path),
        str(rel / "v110.bundle"),
        str(other / "release.pub"),
        str(len(data)),
        hashlib.sha256(data).hexdigest(),
        "{}",
        heap="256K",
    )
    assert not r["ok"] and r["error"].startswith("bad signature"), r


def test_release_errors_are_one_line(rel, tmp_path, capsys):
    assert (
        edgectl(
            [
                "release",
                "--board",
                "unix-sim",
                "--version",
                "1.2",
                "--key",
                str(rel / "release.json"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("edgectl: release: argument --version: version '1.2' is not MAJOR.")
    bad = tmp_path / "x.bundle"
    bad.write_bytes(b"EOTA" + b"\0" * 20)
    assert edgectl(["release", "--check", str(bad)]) == 2
    assert "edgectl:" in capsys.readouterr().err
    assert edgectl(["release-key", str(rel / "release.json")]) == 2
    assert "never overwritten" in capsys.readouterr().err


def test_key_rotation_is_adopted_only_when_its_trial_is_confirmed(tmp_path, micropython):
    """The next key a release names is trusted only once that release's trial is confirmed;
    a rolled-back trial leaves the old key; a deploy of another key wins (docs/OTA.md 3)."""
    keys = []
    for name in ("old", "new", "later"):
        (tmp_path / name).mkdir()
        keys.append(make_key(tmp_path / name).public().hex())
    (tmp_path / "root").mkdir()
    r = mp_json(os.path.join(ROOT, "tests", "mp", "ota_keys.py"), str(tmp_path / "root"), *keys)
    assert r["during_trial"] == r["old"]
    assert r["after_rollback"] == r["old"]
    assert r["after_confirm"] == r["new"]
    assert r["after_redeploy"] == r["later"]


def test_a_next_key_is_checked_before_it_is_signed(rel, tmp_path, capsys):
    from edge import bundle

    m = {"bundle": 1, "version": "1.0.0", "mpy": 6, "platform": "unix", "files": []}
    m["files"] = [["edge/a.mpy", 0, "00" * 32]]
    for bad, why in [("00" * 60, "one-level HSS key"), ("zz" * 60, "120 hex digits"), (7, "hex")]:
        with pytest.raises(bundle.BundleError, match=why):
            bundle.parse_manifest(json.dumps(dict(m, next_key=bad)))
    args = ["release", "--board", "unix-sim", "--version", "1.3.0"]
    args += ["--key", str(rel / "release.json"), "--out", str(tmp_path / "x.bundle")]
    assert edgectl(args + ["--next-key", str(rel / "release.pub")]) == 2
    assert "nothing to rotate to" in capsys.readouterr().err
