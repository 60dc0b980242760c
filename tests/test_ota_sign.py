"""Release signatures: HSS/LMS (RFC 8554) signed on the host, verified by edge/lms.py under
CPython and under the unix MicroPython; every tampered part is refused."""

from __future__ import annotations

import json
import os
import struct

import pytest

from edge import lms
from host_tools.errors import ToolError
from host_tools.ota.keys import ReleaseKey
from tests.conftest import ROOT, mp_json
from tests.ota_rig import make_key


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return make_key(tmp_path_factory.mktemp("key"))


def test_sign_verify_and_every_tamper_refused(key):
    msg = b'{"version":"1.2.3"}'
    sig = key.sign(msg)
    pub = key.public()
    assert lms.hss_verify(pub, msg, sig)
    assert not lms.hss_verify(pub, msg + b" ", sig)
    for pos in (15, 12 + 32 + 5, len(sig) // 2, len(sig) - 1):  # C, a chain value, the path
        bad = bytearray(sig)
        bad[pos] ^= 0x01
        assert not lms.hss_verify(pub, msg, bytes(bad)), pos
    wrong_root = pub[:-1] + bytes([pub[-1] ^ 1])
    assert not lms.hss_verify(wrong_root, msg, sig)
    other = make_key(key.path.parent / "other", lms_type=5)
    assert not lms.hss_verify(other.public(), msg, sig)


@pytest.mark.parametrize(
    "mangle, why",
    [
        (lambda s: s[:-1], "length"),
        (lambda s: s + b"\0", "length"),
        (lambda s: struct.pack(">I", 1) + s[4:], "levels"),
        (lambda s: s[:8] + struct.pack(">I", 9) + s[12:], "LM-OTS type"),
        (lambda s: s[:4] + struct.pack(">I", 1 << 20) + s[8:], "leaf index"),
    ],
)
def test_malformed_signatures_are_errors_not_crashes(key, mangle, why):
    sig = key.sign(b"m")
    with pytest.raises(lms.SignatureError):
        lms.hss_verify(key.public(), b"m", mangle(sig))


def test_a_leaf_is_never_used_twice_and_a_used_up_key_refuses(tmp_path):
    key = make_key(tmp_path)
    leaves = set()
    for i in range(32):
        sig = key.sign(b"%d" % i)
        leaves.add(struct.unpack_from(">I", sig, 4)[0])
        # the file already records the next leaf when the signature is handed out
        assert json.loads(key.path.read_text())["next"] == i + 1
    assert leaves == set(range(32))
    with pytest.raises(ToolError, match="used up"):
        key.sign(b"one more")
    # a second process holding an old copy of the key still takes a fresh leaf
    stale = ReleaseKey.load(key.path)
    stale.next = 0
    with pytest.raises(ToolError, match="used up"):
        stale.sign(b"replayed state")


def test_key_file_is_private_and_never_overwritten(tmp_path):
    key = make_key(tmp_path)
    assert key.path.stat().st_mode & 0o077 == 0
    with pytest.raises(ToolError, match="never overwritten"):
        ReleaseKey.generate(key.path)


def test_micropython_verifies_what_the_host_signed(key, tmp_path, micropython):
    msg = b"manifest bytes"
    sig = key.sign(msg)
    bad = bytearray(sig)
    bad[200] ^= 0x80
    (tmp_path / "pub").write_bytes(key.public())
    (tmp_path / "sig").write_bytes(sig)
    (tmp_path / "bad").write_bytes(bytes(bad))
    script = tmp_path / "v.py"
    script.write_text(
        "import json, time\nfrom edge import lms\n"
        f"d = {str(tmp_path)!r}\n"
        "pub = open(d + '/pub', 'rb').read()\n"
        "sig = open(d + '/sig', 'rb').read()\nbad = open(d + '/bad', 'rb').read()\n"
        "t = time.ticks_us()\nok = lms.hss_verify(pub, b'manifest bytes', sig)\n"
        "us = time.ticks_diff(time.ticks_us(), t)\n"
        "print(json.dumps({'ok': ok, 'bad': lms.hss_verify(pub, b'manifest bytes', bad),"
        " 'other_msg': lms.hss_verify(pub, b'manifest byteS', sig), 'us': us}))\n"
    )
    # 32 KiB heap: verification fits beside a tight agent
    r = mp_json(str(script), heap="32K")
    assert r["ok"] is True and r["bad"] is False and r["other_msg"] is False


RFC = os.path.join(ROOT, "tests", "vectors", "rfc8554.json")


def test_rfc8554_test_cases_verify_under_cpython():
    with open(RFC) as f:
        cases = json.load(f)["cases"]
    for c in cases:
        pub, sig = bytes.fromhex(c["public"]), bytes.fromhex(c["signature"])
        msg = c["message"].encode()
        assert lms.hss_verify(pub, msg, sig), c["name"]
        assert not lms.hss_verify(pub, msg[:-1], sig), c["name"]


def test_rfc8554_test_cases_verify_under_micropython(tmp_path, micropython):
    script = tmp_path / "rfc.py"
    script.write_text(
        "import json, binascii\nfrom edge import lms\n"
        f"cases = json.load(open({RFC!r}))['cases']\nout = []\n"
        "for c in cases:\n"
        "    pub = binascii.unhexlify(c['public'])\n"
        "    sig = binascii.unhexlify(c['signature'])\n"
        "    m = c['message'].encode()\n"
        "    out.append([lms.hss_verify(pub, m, sig), lms.hss_verify(pub, m + b'!', sig)])\n"
        "print(json.dumps(out))\n"
    )
    assert mp_json(str(script), heap="256K") == [[True, False], [True, False]]
