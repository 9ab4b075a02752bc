"""`mcnn board`: talk to the board over UART, or to its simulation.

    mcnn board --sim faults --frames N [--json]   fault-injection session, pure-Python device model
    mcnn board --sim faults --device cosim ...    the same against the Verilated RTL (tb/cosim/link_cosim.py)
    mcnn board --sim identify|status [--device model|cosim]
    mcnn board --port /dev/ttyUSB0 [--session identify|status|faults]   a real board (pyserial)

  With the controller attached (--device controller: link + host bridge + controller + 8 array
  models co-simulated, tb/cosim/host_cosim.py, the programming physics from golden.crossbar; or --port):
    mcnn board --sim identify|status|counters --device controller
    mcnn board --sim program --cells "pe,row,bl,target;..." --device controller   write-verify report
    mcnn board --sim read --cells "pe,row,bl;..." --device controller             verify-read codes
    mcnn board --sim infer --images N --device controller       N test images (weights transferred)
    mcnn board --sim train --images N [--eta E] --device controller   one hybrid-training batch
    mcnn board --sim faults --device controller --frames N      fault injection incl. PROGRAM/READ

  Programming journal (docs/link.md): a transfer or training session on a board records every chunk
  and its answers; an interrupted one (killed host, lost link) is finished without programming any
  cell twice:
    mcnn board --port P --session program|train ... --journal FILE [--force]
    mcnn board --port P --resume FILE
  (--port unix:PATH: a device served on a Unix socket with the SimTransport protocol.)

The JSON of a fault session names its device in "source" (model, cosim or serial).
Every session retries a command (same frame, growing backoff) until --deadline seconds (default 30,
at least 10 --timeout), virtual time for the simulated devices (docs/link.md "Host retry semantics").
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from golden.fileio import InputError
from sw.argtypes import POSITIVE, PROBABILITY, SEED, float_range, int_range

SESSIONS = ("faults", "identify", "status", "counters", "program", "read", "infer", "train")
CONTROLLER_SESSIONS = ("counters", "program", "read", "infer", "train")
WEEK = 7 * 86400.0     # upper bound of the times in seconds (a serial read waits at most --timeout: select()
                       # overflows beyond ~9e9 s)
COSIM_DEVICES = ("cosim", "controller")   # co-simulated in tb/cosim/ (link_cosim.py, host_cosim.py)


def _port(s: str) -> str:
    """--port: not empty (an empty --port "$PORT" would otherwise run the simulated device)."""
    if not s.strip():
        raise argparse.ArgumentTypeError(f"expected a serial port such as /dev/ttyUSB0 (or unix:PATH), got {s!r}")
    return s


def add_arguments(p):
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", choices=SESSIONS, help="run SESSION against a simulated device")
    where.add_argument("--port", type=_port, help="serial port of a board (e.g. /dev/ttyUSB0)")
    p.add_argument("--session", choices=SESSIONS, default="identify", help="session to run with --port")
    p.add_argument("--device", choices=("model", "cosim", "controller"), default="model",
                   help="simulated device: pure-Python model (fast, default), the Verilated link (cosim) or the "
                        "Verilated link + controller + array models (controller)")
    p.add_argument("--cells", default="", help="program/read: cells 'pe,row,bl[,target];...' (target: verify code)")
    p.add_argument("--images", type=int_range(1, 10_000), default=2, help="infer/train: number of images")
    p.add_argument("--eta", type=POSITIVE, default=None,
                   help="train: learning rate (default: chosen on the validation split on a golden model of the board)")
    p.add_argument("--board-seed", type=SEED, default=0, help="--device controller: device seed of the simulated board")
    p.add_argument("--baud", type=int_range(50, 12_000_000), default=115200)
    p.add_argument("--frames", type=int_range(1, 10_000_000), default=1000, help="commands in a fault session")
    p.add_argument("--seed", type=SEED, default=2020)
    p.add_argument("--rate", type=PROBABILITY, default=0.2, help="probability that a frame/read chunk gets faults")
    p.add_argument("--deadline", type=float_range(0.0, WEEK, lo_open=True), default=None,
                   help="seconds a command is retried (with backoff, the same frame) before it fails "
                        "(default: 30, at least 10 timeouts); simulated devices count it in virtual time")
    p.add_argument("--retries", type=int_range(0, 1000), default=None,
                   help="optional upper bound on the retries of a command as well (default: none, the deadline)")
    p.add_argument("--hang-max", type=float_range(0.0, WEEK), default=None,
                   help="faults: longest injected device hang, seconds (default: a third of the deadline; "
                        ">= the deadline makes some commands fail)")
    p.add_argument("--timeout", type=float_range(0.0, 3600.0, lo_open=True), default=1.0,
                   help="seconds an attempt waits for the answer (virtual time for simulated devices)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--journal", type=Path, default=None,
                   help="with --port, program/train: record every chunk and its answers in this append-only file")
    p.add_argument("--resume", type=Path, default=None,
                   help="with --port: finish the program/train session recorded in this journal")
    p.add_argument("--force", action="store_true", help="--journal: overwrite an existing journal")


def run(args, cosim=None) -> dict:
    """Run the session of `args`. `cosim(args)`: the co-simulated devices (COSIM_DEVICES), which live
    in tb/ (tb.cosim.commands.board); sw/cli.py passes it in."""
    from sw.driver import TransferError
    from sw.link import LinkError
    if (args.journal or args.resume) and not args.port:
        raise InputError("--journal/--resume need --port (a device that outlives the host process)")
    if args.journal and args.resume:
        raise InputError("--journal starts a session, --resume finishes one: give one of them")
    if args.eta is not None:
        _check_eta(args.eta)
    try:
        if args.port:
            return _serial(args)
        if args.device != "controller" and args.sim in CONTROLLER_SESSIONS:
            raise InputError(f"--sim {args.sim} needs the controller: --device controller (or --port)")
        if args.device in COSIM_DEVICES:
            return cosim(args)
        return _model(args)
    except TransferError as e:
        j = args.journal or args.resume
        hint = f"; every answer so far is in {j}: finish with --port {args.port} --resume {j}" if j else ""
        raise InputError(f"{e}{hint}") from e
    except LinkError as e:
        raise InputError(f"{type(e).__name__}: {e}") from e   # the CLI reports InputErrors (exit 2)
    except OSError as e:                  # serial.SerialException included
        raise InputError(f"{args.port or 'co-simulation'}: {e}") from e


def _check_eta(eta: float):
    """--eta must fit the update engine's registers as M / 2^shift (golden.update.eta_params on the
    default weights, as Board.train_fc converts it), checked before anything is sent."""
    from golden import weights
    from golden.update import eta_params
    from sw.csr_map import REGISTERS
    try:
        fits = [eta_params(eta, weights.load().q), ""]
    except (ArithmeticError, ValueError) as e:     # OverflowError (a tiny eta), a ratio too large for M
        fits = [None, f": {e}"]
    for v, reg in zip(fits[0] or (), ("ctrl_eta_m", "ctrl_eta_sh")):
        if not 0 <= v < 1 << REGISTERS[reg].width:
            fits = [None, f": {reg} = {v} does not fit {REGISTERS[reg].width} bits"]
    if fits[0] is None:
        raise InputError(f"--eta {eta:g}: not representable by the update engine{fits[1]} (e.g. 1e-9..1e8)")


def _model(args) -> dict:
    from sw.driver import Board
    from sw.faults import model_session
    if args.sim == "faults":
        return model_session(args.frames, seed=args.seed, rate=args.rate, retries=args.retries, hang_max=args.hang_max,
                             deadline=args.deadline, timeout=args.timeout)
    c = Board.model(retries=args.retries, deadline=args.deadline, timeout=args.timeout).open()
    return {"source": "model", **(c.identify() if args.sim == "identify" else link_status(c))}


def link_status(c) -> dict:
    """`status` session: the STATUS window, then the link's byte counters and the host's (Board.link_bytes)."""
    return {**c.status(), **c.link_bytes()}


def parse_cells(text: str, with_target: bool) -> list:
    """--cells 'pe,row,bl[,target];...' checked against the design's array (the limits the driver
    checks against a device's IDENTIFY, Board.cell_limits) before anything is sent."""
    from golden.mapping import N_BL, N_PE, N_ROWS
    from sw.driver import Board
    limits = Board.cell_limits({"n_pe": N_PE, "rows": N_ROWS, "bls": N_BL})
    cells = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            v = [int(x, 0) for x in part.split(",")]
        except ValueError:
            v = []
        if len(v) != (4 if with_target else 3) and not (not with_target and len(v) == 4):
            raise InputError(f"--cells: cell {part!r}: expected integers pe,row,bl{',target' if with_target else ''}")
        for x, (name, hi) in zip(v, limits):
            if not 0 <= x <= hi:
                raise InputError(f"--cells: cell {part!r}: {name} {x} outside 0..{hi}")
        cells.append(tuple(v))
    if not cells:
        raise InputError("--cells: no cells given")
    return cells


def host_session(c, cfg) -> dict:
    """The controller sessions (identify, status, counters, program, read, infer, train) on an open
    driver `c`; cfg: cells, n (images), eta, seed, data (dataset directory)."""
    s = cfg["session"]
    journal = cfg.get("journal")
    if journal is not None and s not in ("program", "train"):
        raise InputError(f"a journal records program and train sessions, not {s!r}")
    if s == "identify":
        return c.parameters()
    if s == "status":
        return link_status(c)
    if s == "counters":
        return c.read_counters()
    if s == "program":
        rep = c.program_weights([tuple(x) for x in cfg["cells"]], journal=journal)
        return {"results": [r._asdict() for r in rep["cells"]], "failed": len(rep["failed"]),
                "pulses_total": rep["pulses_total"], "counters": c.read_counters()}
    if s == "read":
        cells = [tuple(x)[:3] for x in cfg["cells"]]
        return {"cells": [list(x) for x in cells], "codes": c.read_conductances(cells), "counters": c.read_counters()}
    import numpy as np

    from golden.idx import default_data_dir, load_dataset
    data = cfg.get("data") or default_data_dir()
    ds = load_dataset(data)
    n = int(cfg.get("n") or 2)
    have = len(ds.test_images) if s == "infer" else ds.split[0]
    if have < n:                # (train: a batch drawn from the training split, golden.idx.split_sizes)
        raise InputError(f"{data}: {have} {'test' if s == 'infer' else 'training'} images, the {s} session "
                         f"takes {n} (--images)")
    if s == "infer":
        r = c.infer(ds.test_images[:n], ds.test_labels[:n].astype(np.int64))
        return {"classes": r["classes"].tolist(), "labels": ds.test_labels[:n].tolist(),
                "logits": r["logits"].tolist(), "p": r["p"].tolist(), "counters": c.read_counters()}
    if s == "train":
        idx = np.random.default_rng(cfg.get("seed", 0)).permutation(ds.split[0])[:n]
        step = {"eta": cfg["eta"], "chosen": False} if cfg.get("eta") else _model_step(ds, n, cfg)
        r = c.train_fc([ds.train_images[idx]], [ds.train_labels[idx].astype(np.int64)], eta=step["eta"],
                       journal=journal)
        return {**r, "step": step, "counters": c.read_counters()}
    raise ValueError(f"unknown controller session {s!r}")


def _model_step(ds, n, cfg) -> dict:
    """The training step of a board session without --eta: golden.hybrid.choose_step on a golden model
    of the board (its device preset and seed; a real board's own devices differ), one batch of n."""
    from golden import weights
    from golden.hybrid import model_board_step
    return model_board_step(weights.load(), ds, cfg.get("device_model", "yao2020"), cfg.get("board_seed", 0),
                            iterations=1, batch=n, seed=cfg.get("seed", 0))


def _open_port(port: str, baud: int):
    """A serial port, or `unix:PATH`: a device served on a Unix socket (SimTransport protocol)."""
    from sw.transport import SerialTransport, SimTransport
    if port.startswith("unix:"):
        return SimTransport.connect(port[5:], timeout=2.0)
    return SerialTransport(port, baud)


def _session_config(args):
    """(cfg, journal) of a --port session: from the arguments, or from the journal of --resume."""
    from sw.journal import Journal
    if args.resume:
        j = Journal.load(args.resume)
        if j.config.get("session") not in ("program", "train"):
            raise InputError(f"{args.resume}: the journal's config names no program or train session "
                             f"(session {j.config.get('session')!r:.40}): nothing to resume")
        return {**j.config, "journal": j}, j
    cfg = {"session": args.session, "n": args.images, "eta": args.eta, "seed": args.seed}
    if args.session in ("program", "read"):
        cfg["cells"] = [list(x) for x in parse_cells(args.cells, args.session == "program")]
    if not args.journal:
        return cfg, None
    if args.session not in ("program", "train"):
        raise InputError(f"--journal records --session program or train, not {args.session}")
    j = Journal.new(args.journal, config=cfg, force=args.force)
    return {**cfg, "journal": j}, j


def _serial(args) -> dict:
    from sw.driver import Board
    from sw.faults import run_session
    from sw.transport import FaultyTransport
    cfg, journal = (None, None) if args.session == "faults" and not args.resume else _session_config(args)
    tr = _open_port(args.port, args.baud)
    kw = dict(retries=args.retries, timeout=args.timeout, deadline=args.deadline)
    try:
        if cfg is None:
            faulty = FaultyTransport(tr, seed=args.seed, rate=args.rate, hang_max=args.hang_max)
            c = Board(faulty, **kw)
            return run_session(c, faulty, args.frames, args.seed, source="serial", stream_check="echo_op")
        c = Board(tr, **kw)
        if journal is None:
            c.open()     # a journaled session opens the board itself, after settling a chunk in doubt
        return {"source": "serial", **host_session(c, cfg)}
    finally:
        if journal is not None:
            journal.close()
        tr.close()


def print_result(r: dict, as_json: bool):
    if as_json:
        print(json.dumps(r))
        return
    if "frames" in r:
        print(f"fault injection ({r['source']}): {r['frames']} commands, {r['attempts']} attempts; "
              f"{r['injected']} faults injected ({r['detected']} detected -> retried, {r['masked']} masked)")
        print(f"  retried {r['retried']}, succeeded {r['succeeded']} (incl. {r['expected_errors']} expected device "
              f"errors), failed {r['failed']} (clear LinkTimeout), UNDETECTED {r['undetected']}, "
              f"executed twice {r['executed_twice']}")
        print(f"  deadline {r['deadline']:g} s: {r['hangs']} hangs (longest {r['hang_longest_s']} s), "
              f"longest command {r['longest_command_s']} s")
        print(f"  injected by kind: {r['injected_by_kind']}")
        print(f"  device counters: {r['device_counters']}; {r['seconds']} s")
        return
    for k, v in r.items():
        print(f"{k:<16}{v:#x}" if isinstance(v, int) and k in ("id", "version", "map_hash", "flags") else f"{k:<16}{v}")
