"""`mcnn board`: talk to the board over UART, or to its simulation.

    mcnn board --sim faults --frames N [--json]   fault-injection session, pure-Python device model
    mcnn board --sim faults --device cosim ...    the same against the Verilated RTL (tb/link_cosim.py)
    mcnn board --sim identify|status [--device model|cosim]
    mcnn board --port /dev/ttyUSB0 [--session identify|status|faults]   a real board (pyserial)

The JSON of a fault session names its device in "source" (model, cosim or serial).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

SESSIONS = ("faults", "identify", "status")


def add_arguments(p):
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", choices=SESSIONS, help="run SESSION against a simulated device")
    where.add_argument("--port", help="serial port of a board (e.g. /dev/ttyUSB0)")
    p.add_argument("--session", choices=SESSIONS, default="identify", help="session to run with --port")
    p.add_argument("--device", choices=("model", "cosim"), default="model",
                   help="simulated device: pure-Python model (fast, default) or the Verilated RTL")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--frames", type=int, default=1000, help="commands in a fault session")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--rate", type=float, default=0.2, help="probability that a frame/read chunk gets faults")
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--hang-max", type=int, default=8,
                   help="longest injected device hang, in attempts (> retries + 1 makes some commands fail)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per attempt (default: 1 serial, 10 sim)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> dict:
    from sw.link import LinkError
    try:
        if args.port:
            return _serial(args)
        if args.device == "cosim":
            return _cosim(args)
        return _model(args)
    except LinkError as e:
        raise ValueError(str(e)) from e   # the CLI reports ValueErrors as clean errors (exit 2)
    except OSError as e:                  # serial.SerialException included
        raise ValueError(f"{args.port or 'co-simulation'}: {e}") from e


def _model(args) -> dict:
    from sw.driver import Controller
    from sw.faults import model_session
    if args.sim == "faults":
        return model_session(args.frames, seed=args.seed, rate=args.rate, retries=args.retries, hang_max=args.hang_max)
    c = Controller.model(retries=args.retries).open()
    return {"source": "model", **(c.identify() if args.sim == "identify" else c.status())}


def _cosim(args) -> dict:
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from tb.link_cosim import run_cosim_session
    except ImportError as e:
        raise ValueError(f"--device cosim needs the repository's tb/ package: {e}") from e
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "session.json"
        r = run_cosim_session(args.sim, str(out), frames=args.frames, seed=args.seed, rate=args.rate,
                              retries=args.retries, hang_max=args.hang_max, timeout=args.timeout or 10.0)
    if args.sim != "faults":
        r = {"source": "cosim", **r}
    return r


def _serial(args) -> dict:
    from sw.driver import Controller
    from sw.faults import run_session
    from sw.transport import FaultyTransport, SerialTransport
    tr = SerialTransport(args.port, args.baud)
    timeout = args.timeout or 1.0
    try:
        if args.session == "faults":
            faulty = FaultyTransport(tr, seed=args.seed, rate=args.rate, hang_max=args.hang_max)
            c = Controller(faulty, retries=args.retries, timeout=timeout)
            return run_session(c, faulty, args.frames, args.seed, source="serial")
        c = Controller(tr, retries=args.retries, timeout=timeout).open()
        return {"source": "serial", **(c.identify() if args.session == "identify" else c.status())}
    finally:
        tr.close()


def print_result(r: dict, as_json: bool):
    if as_json:
        print(json.dumps(r))
        return
    if "frames" in r:
        print(f"fault injection ({r['source']}): {r['frames']} commands, {r['attempts']} attempts; "
              f"{r['injected']} faults injected ({r['detected']} detected -> retried, {r['masked']} masked)")
        print(f"  retried {r['retried']}, succeeded {r['succeeded']} (incl. {r['expected_errors']} expected device "
              f"errors), failed {r['failed']} (clear LinkTimeout), UNDETECTED {r['undetected']}")
        print(f"  injected by kind: {r['injected_by_kind']}")
        print(f"  device counters: {r['device_counters']}; {r['seconds']} s")
        return
    for k, v in r.items():
        print(f"{k:<16}{v:#x}" if isinstance(v, int) and k in ("id", "version", "map_hash", "flags") else f"{k:<16}{v}")
