"""Co-simulation of the link: the unmodified host driver (sw/) talks to the Verilated LinkTop.

cocotb runs inside the simulator, so the host code runs in a thread of the simulator process
and the bytes cross a process-style boundary:

  DirectBridge  a socketpair; the host end is sw.transport.SimTransport, the simulation end
                pushes the bytes straight into the link's byte stream (bypassing the UART PHY,
                for speed) and answers the transport's idle queries, so a host timeout costs
                only the simulated byte_timeout, not wall-clock time;
  UartBridge    a pseudo-terminal pair (os.openpty); the host end is pyserial
                (sw.transport.SerialTransport) on the slave, the simulation end bit-bangs the
                master's bytes onto the UART rx pin and decodes the tx pin.

Python is never awaited per clock while the link is idle: the bridges block on their file
descriptor (which also stops simulated time) and step the clock in coarse Timer hops while the
link works without moving bytes.

`LinkTb` is the design under test: LinkTop(bypass=True) with a complement-echo on the
controller streams (cmd -> FIFO -> ~data -> rsp; `hang`=1 stalls it, a hung controller). Its CSR
map includes the controller's register blocks (rtl/host.py), their inputs at 0, so it has the
map hash of sw/csr_map.py. (The link with the real controller behind it: tb/cosim/host_cosim.py.)

This module is also the cocotb test module of `mcnn board --sim ... --device cosim`
(run_cosim_session): its one test runs the session named in $MCNN_COSIM_SESSION.
"""
from __future__ import annotations

import json
import os
import select
import socket
import threading

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from rtl.link import WORD, LinkTop

# one build for tb/test_link.py and the CLI's co-simulated sessions
TB_PARAMS = dict(divisor=8, max_payload=256, max_response=128, byte_timeout=2000, stream_timeout=20000)
PERIOD_NS = 10


class LinkTb(wiring.Component):
    def __init__(self, divisor=8, max_payload=256, max_response=256, byte_timeout=2000, stream_timeout=20000):
        self.top_params = dict(divisor=divisor, max_payload=max_payload, max_response=max_response,
                               byte_timeout=byte_timeout, stream_timeout=stream_timeout)
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "bypass": In(1),
            "byte_in": In(stream.Signature(8)),
            "byte_out": Out(stream.Signature(8)),
            "idle": Out(1),
            "hang": In(1),
            "ctrl_status": In(32),
            "soft_reset": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # the controller's register blocks are in the map (as on the board), their ro inputs at 0:
        # the map hash and every address are those of sw/csr_map.py
        from rtl.host import controller_blocks
        m.submodules.top = top = LinkTop(bypass=True, blocks=controller_blocks(), **self.top_params)
        m.submodules.echo = fifo = SyncFIFOBuffered(width=WORD.size, depth=16)
        m.d.comb += [top.uart_rx.eq(self.uart_rx), self.uart_tx.eq(top.uart_tx), top.bypass.eq(self.bypass),
                     self.idle.eq(top.idle), top.ctrl_status.eq(self.ctrl_status), self.soft_reset.eq(top.soft_reset)]
        wiring.connect(m, wiring.flipped(self.byte_in), top.byte_in)
        wiring.connect(m, top.byte_out, wiring.flipped(self.byte_out))
        m.d.comb += [fifo.w_data.eq(top.cmd.payload), fifo.w_en.eq(top.cmd.valid & ~self.hang),
                     top.cmd.ready.eq(fifo.w_rdy & ~self.hang)]
        word = WORD(fifo.r_data)
        m.d.comb += [top.rsp.payload.data.eq(~word.data), top.rsp.payload.last.eq(word.last),
                     top.rsp.valid.eq(fifo.r_rdy & ~self.hang), fifo.r_en.eq(top.rsp.ready & ~self.hang)]
        return m


# ------------------------------------------------------------------ cocotb side

async def start(dut, reset_cycles=3):
    import cocotb
    from cocotb.clock import Clock
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start())
    dut.bypass.value = 1
    dut.hang.value = 0
    dut.ctrl_status.value = 0
    dut.uart_rx.value = 1
    dut.byte_in__valid.value = 0
    dut.byte_out__ready.value = 0
    await reset(dut, reset_cycles)


async def reset(dut, cycles=3):
    from cocotb.triggers import RisingEdge
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def hop(dut, cycles):
    """Let `cycles` clock cycles pass with one Timer (no Python per clock); ends after a rising edge."""
    from cocotb.triggers import RisingEdge, Timer
    if cycles > 1:
        await Timer((cycles - 1) * PERIOD_NS + PERIOD_NS // 2, unit="ns")
    await RisingEdge(dut.clk)


class ByteDriver:
    """Clock-by-clock mover of the bypass byte streams (for the block-level tests)."""

    def __init__(self, dut):
        self.dut = dut
        self.inq = bytearray()
        self.out = bytearray()
        self.idle = True
        self.out_valid = False

    async def clock(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        d = self.dut
        push = bool(self.inq)
        if push:
            d.byte_in__payload.value = self.inq[0]
        d.byte_in__valid.value = int(push)
        d.byte_out__ready.value = 1
        await ReadOnly()
        if push and int(d.byte_in__ready.value):
            del self.inq[0]
        self.out_valid = bool(int(d.byte_out__valid.value))
        if self.out_valid:
            self.out.append(int(d.byte_out__payload.value))
        self.idle = bool(int(d.idle.value))
        await RisingEdge(d.clk)

    async def coarse(self, cycles):
        from cocotb.triggers import ReadOnly, RisingEdge
        d = self.dut
        d.byte_in__valid.value = 0
        d.byte_out__ready.value = 0
        await hop(d, cycles)
        await ReadOnly()
        self.out_valid = bool(int(d.byte_out__valid.value))
        self.idle = bool(int(d.idle.value))
        await RisingEdge(d.clk)

    async def settle(self, max_cycles=200_000):
        """Move bytes until everything queued is in and the link is idle with nothing to send."""
        quiet = 0
        for _ in range(max_cycles):
            if self.inq or self.out_valid or not self.idle or quiet < 2:
                if self.inq or self.out_valid or quiet < 2:
                    await self.clock()
                else:
                    await self.coarse(64)
                quiet = quiet + 1 if (not self.inq and not self.out_valid and self.idle) else 0
            else:
                return
        raise TimeoutError("link never became idle")

    async def send(self, data: bytes) -> bytes:
        """Push bytes, run until quiescent, return the bytes the link sent meanwhile."""
        start = len(self.out)
        self.inq += data
        await self.settle()
        return bytes(self.out[start:])

    async def wait(self, cycles) -> bytes:
        """Line idle for `cycles` cycles (collecting any output)."""
        start = len(self.out)
        await self.coarse(cycles)
        await self.settle()
        return bytes(self.out[start:])


class DirectBridge(ByteDriver):
    """SimTransport's simulation end: socket <-> the link's bypass byte streams."""

    def __init__(self, dut, sock):
        from sw.transport import MsgReader
        super().__init__(dut)
        self.sock = sock
        self.sock.setblocking(False)
        self.reader = MsgReader()
        self.query = None
        self.mute = False        # a hung device: bytes in both directions lost (idle still answered: the
                                 # host's timeouts are virtual time, sw/transport.py)
        self.hang = 0            # stall the controller echo (set from the host thread, applied here)
        self.closed = False

    def _poll(self, timeout):
        from sw.transport import MSG_DATA, MSG_QUERY
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self.closed = True
            return
        for kind, body in self.reader.feed(data):
            if kind == MSG_DATA and not self.mute:
                self.inq += body
            elif kind == MSG_QUERY:
                self.query = body

    def _flush(self):
        from sw.transport import MSG_DATA, MSG_IDLE, pack_msg
        if self.out:
            if not self.mute:
                self.sock.setblocking(True)
                self.sock.sendall(pack_msg(MSG_DATA, bytes(self.out)))
                self.sock.setblocking(False)
            self.out.clear()
        if self.query is not None and not self.inq and self.idle and not self.out_valid:
            self.sock.setblocking(True)
            self.sock.sendall(pack_msg(MSG_IDLE, self.query))
            self.sock.setblocking(False)
            self.query = None

    async def run(self, done):
        self.dut.bypass.value = 1
        quiet = 0
        while not done() and not self.closed:
            self._poll(0)
            if int(self.dut.hang.value) != self.hang:
                self.dut.hang.value = self.hang
            if self.inq or self.out_valid or quiet < 2:
                await self.clock()
            elif not self.idle:
                await self.coarse(64)
            else:
                self._flush()
                self._poll(0.01)      # nothing in flight: block (simulated time stands still)
                continue
            # cycles without byte traffic: a link busy executing (a long STREAM) is hopped over
            quiet = quiet + 1 if (not self.inq and not self.out_valid) else 0
            if len(self.out) >= 64 or (quiet >= 2):
                self._flush()


class UartBridge:
    """Pseudo-terminal master <-> the UART pins (8N1, the design's divisor)."""

    def __init__(self, dut, master_fd, divisor):
        self.dut, self.fd, self.divisor = dut, master_fd, divisor
        os.set_blocking(master_fd, False)
        self.inq = bytearray()
        self.mute = False
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.tx_busy = False
        self.line = []           # raw symbols to send: ("byte", b) or ("break", n_bits) or ("bad_stop", b)

    def _poll(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if r:
            try:
                data = os.read(self.fd, 4096)
            except (BlockingIOError, OSError):
                return
            if data and not self.mute:
                self.inq += data

    async def _bits(self, bits):
        from cocotb.triggers import Timer
        for b in bits:
            self.dut.uart_rx.value = b
            await Timer(self.divisor * PERIOD_NS, unit="ns")

    async def monitor_tx(self):
        from cocotb.triggers import FallingEdge, Timer
        d = self.dut
        bt = self.divisor * PERIOD_NS
        while True:
            await FallingEdge(d.uart_tx)
            self.tx_busy = True
            await Timer(bt + bt // 2, unit="ns")
            v = 0
            for i in range(8):
                v |= int(d.uart_tx.value) << i
                await Timer(bt, unit="ns")
            stop = int(d.uart_tx.value)
            self.tx_busy = False
            if stop and not self.mute:
                self.tx_bytes += 1
                while True:
                    try:
                        os.write(self.fd, bytes([v]))
                        break
                    except BlockingIOError:
                        select.select([], [self.fd], [], 0.01)

    async def run(self, done):
        import cocotb
        from cocotb.triggers import Timer
        d = self.dut
        d.bypass.value = 0
        d.uart_rx.value = 1
        mon = cocotb.start_soon(self.monitor_tx())
        await Timer(PERIOD_NS // 2, unit="ns")          # drive the line between clock edges
        try:
            while not done():
                self._poll(0)
                if self.line:
                    kind, arg = self.line.pop(0)
                    if kind == "break":
                        await self._bits([0] * arg + [1])
                    elif kind == "bad_stop":
                        await self._bits([0] + [(arg >> i) & 1 for i in range(8)] + [0, 1, 1])
                elif self.inq:
                    b = self.inq.pop(0)
                    self.rx_bytes += 1
                    await self._bits([0] + [(b >> i) & 1 for i in range(8)] + [1])
                elif self.tx_busy or not int(d.idle.value):
                    await Timer(64 * PERIOD_NS, unit="ns")
                else:
                    await Timer(16 * PERIOD_NS, unit="ns")   # let a started character begin
                    if not self.tx_busy and int(d.idle.value) and not self.inq:
                        self._poll(0.01)
        finally:
            mon.cancel()


def run_host_thread(fn):
    """Start fn() in a thread; returns (thread, result dict with 'value' or 'error')."""
    out = {}

    def body():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: B036 - handed back to the cocotb test
            out["error"] = e

    th = threading.Thread(target=body, daemon=True)
    th.start()
    return th, out


async def with_sim_transport(dut, fn, **ctrl_kw):
    """Run fn(SimTransport) in a host thread against the design; return fn's result."""
    from sw.transport import SimTransport
    a, b = socket.socketpair()
    bridge = DirectBridge(dut, b)
    th, out = run_host_thread(lambda: fn(SimTransport(a), bridge))
    await bridge.run(lambda: not th.is_alive())
    th.join()
    a.close()
    b.close()
    if "error" in out:
        raise out["error"]
    return out["value"]


async def with_pty(dut, fn):
    """Run fn(slave_path, bridge) in a host thread, the pty's master wired to the UART pins."""
    import tty
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    bridge = UartBridge(dut, master, TB_PARAMS["divisor"])
    th, out = run_host_thread(lambda: fn(path, bridge))
    await bridge.run(lambda: not th.is_alive())
    th.join()
    os.close(slave)
    os.close(master)
    if "error" in out:
        raise out["error"]
    return out["value"]


# ------------------------------------------------------------------ CLI sessions

SESSION_ENV = "MCNN_COSIM_SESSION"

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def session(dut):
        """The session named in $MCNN_COSIM_SESSION, over SimTransport; JSON to cfg['out']."""
        cfg = json.loads(os.environ[SESSION_ENV])
        await start(dut)

        def host(tr, bridge):
            from sw.driver import Board
            if cfg["session"] == "faults":
                from sw.faults import run_session
                from sw.transport import FaultyTransport
                faulty = FaultyTransport(tr, seed=cfg["seed"], rate=cfg["rate"], hang_max=cfg["hang_max"])
                board = Board(faulty, retries=cfg["retries"], deadline=cfg.get("deadline"), timeout=cfg["timeout"],
                              seq=cfg["seed"] & 0xFF)
                return run_session(board, faulty, cfg["frames"], cfg["seed"], source="cosim")
            board = Board(tr, timeout=cfg["timeout"], retries=cfg["retries"], deadline=cfg.get("deadline")).open()
            from sw.board import link_status
            return board.identify() if cfg["session"] == "identify" else link_status(board)

        result = await with_sim_transport(dut, host)
        with open(cfg["out"], "w") as f:
            json.dump(result, f)


def run_session(env: str, cfg: dict, run) -> dict:
    """A CLI session in a co-simulation: `cfg` reaches the cocotb side as JSON in $`env` while
    `run()` builds and runs the testbench, which writes its result to cfg["out"]; -> that JSON."""
    old = os.environ.get(env)
    os.environ[env] = json.dumps(cfg)
    try:
        run()
    finally:
        if old is None:
            os.environ.pop(env, None)
        else:
            os.environ[env] = old
    with open(cfg["out"]) as f:
        return json.load(f)


def run_cosim_session(session: str, out_path: str, **cfg) -> dict:
    """Build (cached) and run the co-simulation for a CLI session; return its JSON result."""
    from tb import harness
    return run_session(SESSION_ENV, dict(session=session, out=str(out_path), **cfg), lambda: harness.run_block(
        LinkTb(**TB_PARAMS), "link_tb", "tb.cosim.link_cosim", dict(TB_PARAMS, cli=session), testcase="session"))

