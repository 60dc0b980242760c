"""`edgectl flash`: write a MicroPython firmware image with esptool's Python API (docs/DEPLOY.md
1).

The chip, flash offset and flash size come from the board file (`boards/NAME.json`); the CLI
only parses. `--dry-run` prints the equivalent esptool command line and touches no port.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.board import partitions
from host_tools.errors import ToolError
from host_tools.paths import board_file
from host_tools import argtypes
from host_tools.board.ports import board_port, serial_port

DEFAULT_BAUD = 460800
# One hint for every "cannot talk to the board" failure (esptool's own advice, shortened).
PORT_HINT = (
    "check the USB cable (a data cable, not charge-only), the port name "
    "(ls /dev/ttyUSB* /dev/ttyACM*) and the USB-serial driver (CP210x/CH340/FTDI)"
)


def parse_offset(value: object) -> int:
    """Board files give offsets as "0x1000" strings (readable) or plain ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise ToolError(
        f"board key 'flash_offset' must be an integer or a '0x...' string, got {value!r}"
    )


def _board_key(board: dict, key: str) -> object:
    if board.get(key) in (None, ""):
        raise ToolError(f"board {board.get('name')!r} has no {key!r}: cannot flash it")
    return board[key]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 64 KiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class FlashPlan:
    """Everything one flash needs; `argv` is the equivalent esptool command line."""

    chip: str
    port: str
    baud: int
    offset: int
    flash_size: str
    image: Path
    erase: bool
    argv: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _esptool_size(value) -> str:
    """Board files give flash_size in bytes; esptool wants '4MB' (or 'keep')."""
    if not value:
        return "keep"
    if isinstance(value, int) and not isinstance(value, bool):
        if value % (1 << 20):
            raise ToolError(f"board key 'flash_size' must be a whole number of MiB, got {value}")
        return f"{value >> 20}MB"
    return str(value)


def plan_flash(
    board: dict,
    port: str,
    firmware: str | None = None,
    erase: bool = False,
    baud: int = DEFAULT_BAUD,
    keep_partitions: bool = False,
) -> FlashPlan:
    """Resolve chip, offset, size and image for `board`; check the image's sha256 when the
    board file pins one for that image; unless keep_partitions, flash a copy of the image with
    the board's partition table (host_tools/board/partitions.py: littlefs cut to the board's
    size, the raw log partition added). Does not touch the port."""
    chip = str(_board_key(board, "chip"))
    if not chip.startswith("esp"):
        raise ToolError(
            f"board {board['name']!r} (chip {chip!r}) has no firmware to flash: "
            "use `edgectl run` or `edgectl vboard`"
        )
    offset = parse_offset(_board_key(board, "flash_offset"))
    size = _esptool_size(board.get("flash_size"))
    fw = board.get("firmware") or {}
    if firmware is None:
        if not fw.get("file"):
            raise ToolError(f"board {board['name']!r} names no firmware file: pass --firmware")
        firmware = fw["file"]
    image = Path(firmware)
    plan = FlashPlan(chip, port, baud, offset, size, image, erase)
    if image.is_file():
        if image.stat().st_size == 0:
            raise ToolError(f"firmware {image} is empty")
        pinned = fw.get("sha256")
        if pinned and image.name == fw.get("file"):
            got = sha256_file(image)
            if got != pinned.lower():
                raise ToolError(
                    f"firmware {image} sha256 {got[:16]}... does not match board file "
                    f"{pinned[:16]}...: wrong or corrupt download"
                )
            plan.notes.append(f"sha256 of {image.name} matches the board file")
        else:
            plan.notes.append(f"sha256 of {image.name} not pinned by the board file: not checked")
        if board.get("log_partition") and not keep_partitions:
            _with_board_table(plan, board)
    else:
        plan.notes.append(f"firmware file {image} not present")
    plan.argv = ["esptool", "--chip", chip, "--port", port, "--baud", str(baud), "write-flash"]
    if erase:
        plan.argv.append("--erase-all")
    plan.argv += ["--flash-size", size, hex(offset), str(plan.image)]
    return plan


def _with_board_table(plan: FlashPlan, board: dict) -> None:
    """Point the plan at a copy of the image carrying the board's partition table, written to
    the temporary directory (the dry run's command line works as printed)."""
    import tempfile

    patched, parts = partitions.patch_image(plan.image.read_bytes(), plan.offset, board)
    out = Path(tempfile.gettempdir()) / f"edge-{board['name']}-{plan.image.name}"
    out.write_bytes(patched)
    plan.image = out
    plan.notes.append(
        "partition table: "
        + ", ".join(f"{p.label} {p.offset:#x}+{p.size >> 10}K" for p in parts)
        + f" (copy of the image with it: {out})"
    )


def _chip_name(esp: object) -> str:
    return str(getattr(esp, "CHIP_NAME", "?")).lower().replace("-", "")


def write_firmware(plan: FlashPlan) -> None:
    """Connect with esptool, check the chip, optionally erase, write and verify the image.
    esptool draws its own progress bar. Every failure becomes a one-line ToolError."""
    if not plan.image.is_file():
        url = " (download it from the board file's firmware.url)"
        raise ToolError(f"firmware file {plan.image} not found: pass --firmware{url}")
    if "://" not in plan.port and not os.path.exists(plan.port):
        raise ToolError(f"serial port {plan.port} not found: {PORT_HINT}")
    import serial
    from esptool.cmds import attach_flash, detect_chip, reset_chip, run_stub, write_flash
    from esptool.util import FatalError

    try:
        esp = detect_chip(plan.port, baud=115200, connect_attempts=3)
        try:
            found = _chip_name(esp)
            if found != plan.chip.lower().replace("-", ""):
                raise ToolError(
                    f"wrong chip: board file says {plan.chip}, the board on {plan.port} is "
                    f"{found}: pick the matching --board"
                )
            esp = run_stub(esp)
            if plan.baud != 115200:
                esp.change_baud(plan.baud)
            attach_flash(esp)
            write_flash(
                esp,
                [(plan.offset, str(plan.image))],
                flash_size=plan.flash_size,
                erase_all=plan.erase,
            )
            reset_chip(esp, "hard-reset")
        finally:
            esp._port.close()
    except FatalError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else "esptool failed"
        raise ToolError(f"esptool: {msg}: {PORT_HINT}") from None
    except (serial.SerialException, OSError) as e:
        raise ToolError(f"serial port {plan.port}: {e}: {PORT_HINT}") from None


def cmd_flash(args: argparse.Namespace) -> int:
    """CLI handler: plan, then print (dry run) or flash."""
    board = board_file(args.board)
    opts = (args.firmware, args.erase, args.baud, args.keep_partitions)
    if not args.port:
        plan_flash(board, "PORT", *opts)  # a bad image is the error, before looking for a board
    plan = plan_flash(board, board_port(args.port), *opts)
    for note in plan.notes:
        print(f"# {note}")
    if args.dry_run:
        print(shlex.join(plan.argv))
        return 0
    write_firmware(plan)
    print(f"flashed {plan.image.name} to {plan.chip} at {hex(plan.offset)} on {plan.port}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `edgectl flash`."""
    p = sub.add_parser("flash", help="write MicroPython firmware to a board with esptool")
    p.add_argument("--board", required=True, help="board name (boards/NAME.json) or JSON path")
    p.add_argument(
        "--port",
        type=serial_port,
        help="serial port (default: the only USB serial board attached)",
    )
    p.add_argument(
        "--firmware",
        type=argtypes.input_file,
        help="firmware image (default: the board file's firmware.file)",
    )
    p.add_argument("--erase", action="store_true", help="erase the whole flash first")
    p.add_argument(
        "--baud", type=argtypes.baud, default=DEFAULT_BAUD, help="baud rate for writing"
    )
    p.add_argument("--dry-run", action="store_true", help="print the esptool command only")
    p.add_argument(
        "--keep-partitions",
        action="store_true",
        help="flash the image's own partition table (no raw log partition: the store uses "
        "littlefs, boards/README.md)",
    )
    p.set_defaults(func=cmd_flash)
