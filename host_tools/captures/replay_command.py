"""`edgectl replay`: the command. Bytes go into a pty or a port with their captured timing
(host_tools/captures/replay.py), or into the real agent under unix MicroPython with a virtual
clock (host_tools/agent/replay.py)."""

from __future__ import annotations

import argparse
import sys

from host_tools.agent import replay as replay_agent
from host_tools.captures import capfile
from host_tools.captures.frames import FRAMINGS
from host_tools.captures.replay import (
    damage_dict,
    load,
    parse_time,
    replay_to_port,
    replay_to_pty,
    schedule,
)
from host_tools.errors import ToolError
from host_tools import argtypes
from host_tools.board.ports import serial_port


def _print_damage(damage: capfile.CaptureError, intact: int) -> None:
    print(
        f"edgectl: warning: {damage}: {damage.reason.split(' (')[0]}; "
        f"replaying the {intact} intact chunks before it",
        file=sys.stderr,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    """Handler for `edgectl replay`."""
    if args.update_golden and not args.expect:
        raise ToolError("--update-golden needs --expect GOLDEN.json")
    if (args.expect or args.collector_out) and not args.agent:
        raise ToolError(
            "--expect and --collector-out need --agent (they compare collector output)"
        )
    speed = None if args.fast else args.speed
    if speed is not None and speed <= 0:
        raise ToolError("--speed must be > 0 (use --fast for no pacing)")
    meta, chunks, damage = load(args.files)
    if damage is not None:
        if args.strict:
            raise damage
        _print_damage(damage, damage.intact)
    kinds = ("rx", "tx") if args.direction == "both" else (args.direction,)
    t_from = parse_time(args.from_) if args.from_ else None
    t_to = parse_time(args.to) if args.to else None
    if t_from is not None and t_to is not None and t_to <= t_from:
        raise ToolError(f"--to {args.to} is not after --from {args.from_}")
    items = schedule(chunks, kinds, t_from, t_to, args.loop)
    if not items:
        span = f"{chunks[-1].ts_us / 1e6:.1f}" if chunks else "0"
        raise ToolError(
            f"nothing to replay: no {'/'.join(kinds)} bytes in the chosen range of "
            f"{args.files[0]} (its chunks span 0..{span} s)"
        )
    exit_code = 0
    if args.agent:
        opts = replay_agent.AgentReplayOptions(
            board=args.agent,
            capture=args.files[0],
            config=args.config,
            framing=args.framing,
            t_from_s=t_from,
            t_to_s=t_to,
            grant=args.grant,
            heap=args.heap,
            timeout=args.timeout,
            collector_out=args.collector_out,
            expect=args.expect,
            update_golden=args.update_golden,
        )
        result, exit_code = replay_agent.run(opts, meta, items, chunks)
    elif args.pty:
        result = replay_to_pty(
            items, args.pty, speed, args.wait, args.framing, announce=None if args.json else print
        )
    else:
        result = replay_to_port(items, args.port, speed, args.baud, args.framing)
    result.damage = damage_dict(damage)
    print(
        f"replayed {result.bytes} bytes, {result.frames} frames in {result.chunks} chunks "
        f"in {result.seconds:.3f} s"
    )
    if result.timing is not None and speed:
        print(result.timing.line())
    if args.json:
        print(result.to_json())
    return exit_code


_time = argtypes.checked(parse_time, "a capture time")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `replay` to the edgectl parser."""
    p = sub.add_parser("replay", help="replay a capture into a pty, a port or the agent")
    p.add_argument(
        "files",
        nargs="+",
        type=argtypes.input_file,
        metavar="FILE",
        help="capture file(s); rotation parts in order",
    )
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument(
        "--pty",
        metavar="LINK",
        type=argtypes.link_path,
        help="create a pty and link its port at LINK",
    )
    dest.add_argument(
        "--port", metavar="URL", type=serial_port, help="pyserial URL or device to write to"
    )
    dest.add_argument(
        "--agent", metavar="BOARD", type=argtypes.board, help="run the agent with a virtual clock"
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument(
        "--speed",
        type=argtypes.positive_float,
        default=1.0,
        help="time scale (default 1 = real time)",
    )
    rate.add_argument("--fast", action="store_true", help="no pacing: as fast as possible")
    p.add_argument(
        "--loop", type=argtypes.positive_int, default=1, metavar="N", help="play N times"
    )
    p.add_argument("--from", dest="from_", metavar="T", type=_time, help="start at capture time T")
    p.add_argument("--to", metavar="T", type=_time, help="stop before capture time T")
    p.add_argument(
        "--direction",
        choices=("rx", "tx", "both"),
        default="rx",
        help="which chunks to send (default rx: what the appliance sent)",
    )
    p.add_argument("--framing", choices=FRAMINGS, default="auto", help="frame counting")
    p.add_argument("--baud", type=argtypes.baud, default=115200, help="baud rate for --port")
    p.add_argument(
        "--wait", type=argtypes.seconds, default=30.0, help="--pty: seconds to wait for a reader"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse a damaged capture instead of replaying its intact prefix",
    )
    p.add_argument(
        "--expect",
        metavar="GOLDEN",
        type=argtypes.output_file,
        help="--agent: compare collector output",
    )
    p.add_argument("--update-golden", action="store_true", help="rewrite GOLDEN instead")
    p.add_argument(
        "--collector-out",
        metavar="FILE",
        type=argtypes.output_file,
        help="--agent: write collector output",
    )
    p.add_argument(
        "--config",
        metavar="DEVICE",
        type=argtypes.input_file,
        help="--agent: device config JSON (default: the capture's sidecar NAME.agent.json)",
    )
    p.add_argument(
        "--grant",
        default="all",
        help="--agent: consent granted before the run: "
        "'all', 'none' or a comma list of categories (default all)",
    )
    p.add_argument(
        "--heap", type=argtypes.heapsize, default=None, help="--agent: MicroPython heap size"
    )
    p.add_argument(
        "--timeout", type=argtypes.seconds, default=600.0, help="--agent: give up after S seconds"
    )
    p.add_argument("--json", action="store_true", help="last line of stdout is a JSON summary")
    p.set_defaults(func=cmd_replay)
