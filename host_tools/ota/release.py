"""`edgectl release`: a signed, versioned update bundle of the agent (docs/OTA.md section 2).

The agent is compiled exactly as `edgectl deploy` compiles it (same mpy-cross choice, same
platform filter, same cache), then packed as edge/bundle.py describes: header, manifest (version,
files, sizes, sha256), the release key's HSS signature of the manifest, the files.
`edgectl release-key PATH` makes a key; `edgectl release --check BUNDLE --pub PUB` verifies one
with the device's own code (edge/bundle.py, edge/lms.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from edge import bundle
from host_tools.board.deploy import ARCHS, CACHE_DIR, agent_files, board_platform, compiler_for

from host_tools.errors import ToolError
from host_tools.ota.keys import ReleaseKey, load_public
from host_tools.paths import board_file, local_mpy
from host_tools import argtypes
from host_tools.board.ports import serial_port


@dataclass
class Release:
    """What `build_bundle` wrote."""

    path: Path
    version: str
    files: int
    bytes: int
    payload_bytes: int
    sha256: str
    mpy: int
    platform: str


def target_mpy(board: dict, mpy: int | None = None, port: str | None = None) -> int:
    """The target's `sys.implementation._mpy`: given, read from a board on `port`, the local
    unix MicroPython's for a unix board, else .mpy 6.3 with the board file's `mpy_arch`."""
    if mpy is not None:
        return mpy
    if port:
        from host_tools.board.deploy import Board

        b = Board(port)
        try:
            return b.info()[0]
        finally:
            b.close()
    if board_platform(board) == "unix":
        return local_mpy()
    arch = board.get("mpy_arch")
    if arch not in ARCHS:
        raise ToolError(f"board {board.get('name')} has no known mpy_arch: pass --mpy or --port")
    return ARCHS.index(arch) << 10 | 3 << 8 | 6


def pack(manifest: dict, files: list[bytes], key: ReleaseKey) -> bytes:
    """Header, manifest, signature, files (docs/FORMAT.md section 7)."""
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    bundle.parse_manifest(raw)  # the device's own checks, before a leaf is spent
    sig = key.sign(raw)
    if not bundle.verify(key.public(), raw, sig):
        raise ToolError("the new signature does not verify: release key file is damaged")
    return bundle.pack_header(len(raw), len(sig)) + raw + sig + b"".join(files)


def build_bundle(
    board_name: str,
    version: str,
    key_path: Path,
    out: Path,
    min_version: str | None = None,
    mpy: int | None = None,
    port: str | None = None,
    cache: Path = CACHE_DIR,
    extra: dict[str, bytes] | None = None,
    next_key: bytes | None = None,
) -> Release:
    """Compile the agent for the board and write the signed bundle to `out`. `extra` adds or
    replaces files (edge/... paths), for tests and hot fixes of data files. `next_key`: the
    release public key devices trust from the moment they confirm this release (rotation)."""
    try:
        bundle.parse_version(version)
        if min_version:
            bundle.parse_version(min_version)
    except bundle.BundleError as e:
        raise ToolError(str(e)) from None
    board = board_file(board_name)
    key = ReleaseKey.load(key_path)
    m = target_mpy(board, mpy, port)
    files = agent_files(compiler_for(m), board, cache)
    files.update(extra or {})
    names = sorted(files)
    manifest = {
        "bundle": bundle.FORMAT,
        "version": version,
        "mpy": m,
        "platform": board_platform(board),
        "board": board["name"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": [[n, len(files[n]), hashlib.sha256(files[n]).hexdigest()] for n in names],
    }
    if min_version:
        manifest["min_version"] = min_version
    if next_key is not None:
        if next_key == key.public():
            raise ToolError("--next-key is the signing key itself: nothing to rotate to")
        manifest["next_key"] = next_key.hex()
    data = pack(manifest, [files[n] for n in names], key)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return Release(
        out,
        version,
        len(names),
        len(data),
        sum(len(v) for v in files.values()),
        hashlib.sha256(data).hexdigest(),
        m,
        manifest["platform"],
    )


def read_bundle(path: Path, pub: bytes | None = None) -> dict:
    """Parse and check a bundle as the device does; returns its manifest plus `sha256` and
    `size`. With `pub`, the signature must verify."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ToolError(f"cannot read bundle {path}: {e.strerror}") from None
    try:
        mlen, slen = bundle.parse_header(data)
        raw = data[bundle.HEADER_LEN : bundle.HEADER_LEN + mlen]
        sig = data[bundle.HEADER_LEN + mlen : bundle.HEADER_LEN + mlen + slen]
        m = bundle.parse_manifest(raw)
        if pub is not None and not bundle.verify(pub, raw, sig):
            raise bundle.BundleError("bad signature: not signed by this release key")
        pos = bundle.HEADER_LEN + mlen + slen
        for name, size, digest in m["files"]:
            if hashlib.sha256(data[pos : pos + size]).digest() != digest:
                raise bundle.BundleError(f"file {name} does not match its manifest hash")
            pos += size
        if pos != len(data):
            raise bundle.BundleError(f"bundle is {len(data)} bytes, manifest says {pos}")
    except bundle.BundleError as e:
        raise ToolError(f"{path}: {e}") from None
    m["files"] = [[n, s, d.hex()] for n, s, d in m["files"]]
    if m.get("next_key") is not None:
        m["next_key"] = m["next_key"].hex()
    m["sha256"] = hashlib.sha256(data).hexdigest()
    m["size"] = len(data)
    return m


def cmd_release(args: argparse.Namespace) -> int:
    """CLI handler: build a bundle, or --check one."""
    if args.check:
        pub = load_public(Path(args.pub)) if args.pub else None
        m = read_bundle(Path(args.check), pub)
        print(
            f"{args.check}: version {m['version']} for {m['platform']} (.mpy {m['mpy']}), "
            f"{len(m['files'])} files, {m['size']} B, sha256 {m['sha256']}, "
            f"signature {'valid' if pub else 'not checked (no --pub)'}"
        )
        if m.get("next_key"):
            kid = hashlib.sha256(bytes.fromhex(m["next_key"])).hexdigest()[:16]
            print(f"rotates the release key: devices that confirm it trust key {kid} only")
        return 0
    if not (args.board and args.version and args.key):
        raise ToolError("release needs --board, --version and --key (or --check BUNDLE)")
    out = Path(args.out or f"build/release/agent-{args.board}-{args.version}.bundle")
    nxt = load_public(Path(args.next_key)) if args.next_key else None
    r = build_bundle(
        args.board,
        args.version,
        Path(args.key),
        out,
        args.min_version,
        args.mpy,
        args.port,
        next_key=nxt,
    )
    left = ReleaseKey.load(Path(args.key)).remaining
    print(
        f"release {r.version} for {r.platform} (.mpy {r.mpy}): {r.files} files, "
        f"{r.payload_bytes} B of code, bundle {r.bytes} B -> {r.path}\n"
        f"sha256 {r.sha256}\nrelease key: {left} signatures left"
    )
    return 0


def cmd_release_key(args: argparse.Namespace) -> int:
    """CLI handler: a new release key."""
    types = {5: 5, 10: 6, 15: 7}
    key = ReleaseKey.generate(Path(args.path), types[args.height])
    print(
        f"release key {args.path} (0600, keep it offline), public key {args.path}.pub: "
        f"{key.public().hex()}\n{1 << args.height} signatures; copy the .pub to each device's "
        "secrets/ as release.pub (edgectl deploy copies secrets/)"
    )
    return 0


def _version(text: str) -> str:
    """argparse type: a release version MAJOR.MINOR.PATCH (edge/bundle.py), kept as text."""
    try:
        bundle.parse_version(text)
    except bundle.BundleError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def register(sub: argparse._SubParsersAction) -> None:
    """Add `edgectl release` and `edgectl release-key`."""
    p = sub.add_parser("release", help="build a signed update bundle of the agent")
    p.add_argument(
        "--board",
        type=argtypes.board,
        help="board name (boards/NAME.json): platform and .mpy arch",
    )
    p.add_argument("--version", type=_version, help="release version MAJOR.MINOR.PATCH")
    p.add_argument(
        "--key", type=argtypes.input_file, help="release key file (edgectl release-key)"
    )
    p.add_argument(
        "--min-version",
        type=_version,
        help="once confirmed, devices refuse bundles older than this",
    )
    p.add_argument(
        "--next-key",
        metavar="PUB",
        type=argtypes.input_file,
        help="rotate: devices that confirm this release trust only this public key afterwards",
    )
    p.add_argument(
        "--mpy", type=argtypes.positive_int, help="target sys.implementation._mpy (default: board)"
    )
    p.add_argument(
        "--port", type=serial_port, help="read the .mpy format from the board on this port"
    )
    p.add_argument(
        "--out",
        type=argtypes.output_file,
        help="bundle path (default build/release/agent-BOARD-VERSION.bundle)",
    )
    p.add_argument(
        "--check",
        metavar="BUNDLE",
        type=argtypes.input_file,
        help="check a bundle instead of building one",
    )
    p.add_argument(
        "--pub",
        type=argtypes.input_file,
        help="with --check: release public key to verify the signature",
    )
    p.set_defaults(func=cmd_release)
    k = sub.add_parser("release-key", help="make a release signing key (HSS/LMS, RFC 8554)")
    k.add_argument(
        "path",
        type=argtypes.new_file,
        help="key file to create (never overwritten); PATH.pub beside it",
    )
    k.add_argument(
        "--height", type=int, choices=(5, 10, 15), default=10, help="2^height signatures"
    )
    k.set_defaults(func=cmd_release_key)
