"""Co-simulation of the host path: the unmodified driver (sw/driver.py) drives the whole controller.

Verilated top (`HostSimTop`): LinkTop in bypass mode (the link's byte streams straight from
sw.transport.SimTransport, as tb/cosim/link_cosim.py) + the host bridge (rtl/host.py) + tb/cosim/sim_top.py's
SimTop (the controller with 8 pe_model array models). The controller's CSR block is in the
link's map, so the driver sees the design as on the board.

The programming physics stays in golden/: the controller's write-verify requests (prog_req /
prog_rsp) and the bridge's verify reads (vread_req / vread_rsp: the pair programmer's and the
host READ command's) are answered by tb/cosim/sim_top.py's CrossbarBackend (golden.crossbar); each
finished cell's new read current is written into the array model through the backdoor port, so
inference sees it. `ProgrammingServer` does this; it wakes only when a request appears, so
inference and idle stretches cost no Python per clock.

This module is also the cocotb test module of `mcnn board --device controller` sessions
(run_host_session): its one test runs the session named in $MCNN_HOST_SESSION.
"""
from __future__ import annotations

import json
import os

from amaranth.hdl import Module, ResetInserter
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.host import HostBridge, connect_bridge, connect_ctrl_regs, controller_blocks
from rtl.link import LinkTop

# link parameters of the host co-simulation: full-size buffers (as the board), a stream timeout
# long enough for a training batch's programming
HOST_TB_PARAMS = dict(divisor=8, max_payload=1024, max_response=1024, byte_timeout=4000, stream_timeout=1 << 26)
PERIOD_NS = 10


class HostSimTop(wiring.Component):
    def __init__(self, controller, adc_shift: int, **link_params):
        from tb.cosim.sim_top import CUR_BITS, SimTop
        self.ctrl = controller
        self.sim = SimTop(controller, adc_shift)
        self.bridge = HostBridge(controller)
        self.link_params = dict(HOST_TB_PARAMS, **link_params)
        c = controller
        code = data.StructLayout({"code": c.code_bits})
        super().__init__({
            "uart_rx": In(1, init=1), "uart_tx": Out(1, init=1),
            "bypass": In(1),
            "byte_in": In(stream.Signature(8)),
            "byte_out": Out(stream.Signature(8)),
            "idle": Out(1),
            "hang": In(1),
            "soft_reset": Out(1),
            # the PE board's programming and verify-read channels (served by the testbench)
            "prog_req": Out(stream.Signature(c.wv.req_layout)),
            "prog_rsp": In(stream.Signature(c.wv.rsp_layout)),
            "vread_req": Out(stream.Signature(c.pp.rd_layout)),
            "vread_rsp": In(stream.Signature(code)),
            # every write-verify result (host or pair programmer), as it is taken
            "mon_res_valid": Out(1),
            "mon_res": Out(c.wv.res_layout),
            "cfg_we": In(1), "cfg_pe": In(4), "cfg_addr": In(16), "cfg_data": In(CUR_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = LinkTop(bypass=True, blocks=controller_blocks(self.ctrl), **self.link_params)
        soft = link.soft_reset
        sim, br = self.sim, self.bridge
        m.submodules.sim = ResetInserter({"sync": soft})(sim)
        m.submodules.bridge = ResetInserter({"sync": soft})(br)
        m.d.comb += [link.uart_rx.eq(self.uart_rx), self.uart_tx.eq(link.uart_tx), link.bypass.eq(self.bypass),
                     self.idle.eq(link.idle), self.soft_reset.eq(soft)]
        wiring.connect(m, wiring.flipped(self.byte_in), link.byte_in)
        wiring.connect(m, link.byte_out, wiring.flipped(self.byte_out))
        # link <-> bridge (`hang` stalls the command stream: a hung controller)
        m.d.comb += [br.cmd.payload.eq(link.cmd.payload), br.cmd.valid.eq(link.cmd.valid & ~self.hang),
                     link.cmd.ready.eq(br.cmd.ready & ~self.hang)]
        wiring.connect(m, br.rsp, link.rsp)
        # bridge <-> controller
        connect_bridge(m, br, sim)
        m.d.comb += [self.mon_res_valid.eq(sim.prog_res.valid & sim.prog_res.ready),
                     self.mon_res.eq(sim.prog_res.payload)]
        # the PE board channels
        wiring.connect(m, sim.prog_req, wiring.flipped(self.prog_req))
        wiring.connect(m, wiring.flipped(self.prog_rsp), sim.prog_rsp)
        wiring.connect(m, br.vread_req, wiring.flipped(self.vread_req))
        wiring.connect(m, wiring.flipped(self.vread_rsp), br.vread_rsp)
        m.d.comb += [sim.cfg_we.eq(self.cfg_we), sim.cfg_pe.eq(self.cfg_pe), sim.cfg_addr.eq(self.cfg_addr),
                     sim.cfg_data.eq(self.cfg_data)]
        # CSRs and the status word
        connect_ctrl_regs(m, link.regs, sim, br)
        m.d.comb += link.ctrl_status.eq(sim.busy | (sim.overrun << 1) | (br.active << 2) | (sim.status << 8))
        return m


def build_top(w=None):
    from golden import weights
    from golden.adc import ADC
    from tb.cosim.sim_top import adc_shift_for, build_controller
    w = w or weights.load()
    return HostSimTop(build_controller(w), adc_shift_for(ADC()))


# ------------------------------------------------------------------ cocotb side

class ProgrammingServer:
    """Answers the PE board's programming requests and verify reads from golden physics.

    backend: tb.cosim.sim_top.CrossbarBackend. Runs as a cocotb coroutine: sleeps until prog_req or
    vread_req rises, then follows the requests cycle by cycle until the channels have been quiet
    for `quiet` cycles. Counts the requests it served (tests compare them with the CSR counters)."""

    def __init__(self, dut, backend, quiet=64):
        self.dut, self.backend, self.quiet = dut, backend, quiet
        self.served = {"set": 0, "reset": 0, "wv_reads": 0, "vreads": 0, "cells": 0}
        self.results = []

    async def run(self):
        from cocotb.triggers import First, ReadOnly, RisingEdge

        from tb.harness import pack, unpack
        d, be = self.dut, self.backend
        L = be.layouts
        d.prog_req__ready.value = 1
        d.vread_req__ready.value = 1
        d.prog_rsp__valid.value = 0
        d.vread_rsp__valid.value = 0
        d.cfg_we.value = 0
        current = None
        while True:
            # (a writable phase after a clock edge or a request edge: values are post-edge)
            if not (int(d.prog_req__valid.value) or int(d.vread_req__valid.value)):
                await First(RisingEdge(d.prog_req__valid), RisingEdge(d.vread_req__valid))
            rsp_q, vrsp_q, cfg = [], [], None
            idle = 0
            while idle < self.quiet or rsp_q or vrsp_q or cfg is not None:
                if rsp_q:
                    d.prog_rsp__payload.value = pack(L["rsp"], code=rsp_q[0])
                d.prog_rsp__valid.value = int(bool(rsp_q))
                if vrsp_q:
                    d.vread_rsp__payload.value = vrsp_q[0]
                d.vread_rsp__valid.value = int(bool(vrsp_q))
                if cfg is not None:
                    d.cfg_we.value, d.cfg_pe.value, d.cfg_addr.value, d.cfg_data.value = 1, *cfg
                    cfg = None
                else:
                    d.cfg_we.value = 0
                await ReadOnly()
                idle += 1
                if rsp_q and int(d.prog_rsp__ready.value):
                    rsp_q.pop(0)
                if vrsp_q and int(d.vread_rsp__ready.value):
                    vrsp_q.pop(0)
                if int(d.mon_res_valid.value):
                    r = unpack(L["res"], int(d.mon_res.value))
                    units = be.end(bool(r["ok"]), r["pulses"])
                    cfg = (r["pe"], r["row"] * self.backend.n_bl + r["bl"], units)
                    current = None
                    self.results.append(r)
                    self.served["cells"] += 1
                    idle = 0
                if int(d.vread_req__valid.value):
                    q = unpack(L["vread"], int(d.vread_req__payload.value))
                    vrsp_q.append(be.vread(q["pe"], q["row"], q["bl"]))
                    self.served["vreads"] += 1
                    idle = 0
                if int(d.prog_req__valid.value):
                    q = unpack(L["req"], int(d.prog_req__payload.value))
                    addr = (q["pe"], q["row"], q["bl"])
                    if current != addr:
                        be.begin(*addr)
                        current = addr
                    if q["op"] == 2:     # READ
                        rsp_q.append(be.read())
                        self.served["wv_reads"] += 1
                    else:                # SET = 0, RESET = 1 (golden.write_verify.Pulse)
                        be.pulse(q["op"])
                        self.served["set" if q["op"] == 0 else "reset"] += 1
                    idle = 0
                await RisingEdge(d.clk)
            d.prog_rsp__valid.value = 0
            d.vread_rsp__valid.value = 0
            d.cfg_we.value = 0


async def start(dut, xb, ctrl):
    """Let the clock run (the HDL-clocked top starts from its registers' init values; it has no reset
    port: a later session clears the controller with the link's soft reset), load the board's cell
    currents into the array models, start the programming server."""
    import cocotb

    from tb.cosim import sim_top
    from tb.harness import start_clock_and_reset
    dut.bypass.value = 1
    dut.hang.value = 0
    dut.uart_rx.value = 1
    dut.byte_in__valid.value = 0
    dut.byte_out__ready.value = 0
    dut.cfg_we.value = 0
    dut.prog_rsp__valid.value = 0
    dut.vread_rsp__valid.value = 0
    await start_clock_and_reset(dut, start_clock=False)
    await sim_top.load_cells(dut, xb.i_units(), dut.clk)
    be = sim_top.CrossbarBackend(xb, ctrl)
    be.n_bl = ctrl.n_bl
    server = ProgrammingServer(dut, be)
    cocotb.start_soon(server.run())
    return server


def run_block(params: dict, testcase=None, test_module="tb.test_host"):
    """Build (cached) and run a cocotb module against HostSimTop."""
    from tb import harness
    from tb.cosim.sim_top import SIM_SOURCES
    return harness.run_block(build_top(), "mcnn_host", test_module, params, testcase=testcase,
                             extra_sources=SIM_SOURCES, ports_only=True, hdl_clock_ns=PERIOD_NS)


class GoldenOracle:
    """The golden reference of a fault session with the controller attached (sw.faults.controller_ops):
    a copy of the board, updated with the commands the device answered."""

    def __init__(self, gold, cells):
        self.gold, self.cells, self.pulses = gold, [tuple(c) for c in cells], 0

    def program(self, pe, row, bl, target):
        r = self.gold.program_cell(pe, row, bl, target)
        self.pulses += r.pulses
        return r.ok, r.pulses, r.final_code

    def read(self, pe, row, bl):
        return self.gold.verify_read(pe, row, bl)


FAULT_CELLS = [(0, r, b) for r in (3, 40, 90) for b in (2, 9)] + [(2, 10, 5), (7, 125, 0)]


# ------------------------------------------------------------------ CLI sessions

SESSION_ENV = "MCNN_HOST_SESSION"

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def session(dut):
        """The session named in $MCNN_HOST_SESSION, the driver over SimTransport; JSON to cfg['out']."""
        cfg = json.loads(os.environ[SESSION_ENV])
        from golden.crossbar import Crossbar
        from tb.cosim.link_cosim import with_sim_transport
        from golden import weights
        w = weights.load()
        xb = Crossbar(cfg.get("device_model", "yao2020"), seed=cfg.get("board_seed", 0))
        if cfg["session"] in ("infer", "train"):     # a board with the weights transferred (golden)
            from golden.mapping import build_mapping
            from golden.transfer import transfer
            transfer(xb, build_mapping(), w.int_w)
        gold = xb.copy()
        ctrl = build_top(w).ctrl
        await start(dut, xb, ctrl)

        def host(tr, bridge):
            from sw.driver import Board
            if cfg["session"] == "faults":
                from sw.faults import controller_ops, run_session
                from sw.transport import FaultyTransport
                faulty = FaultyTransport(tr, seed=cfg["seed"], rate=cfg["rate"], hang_max=cfg["hang_max"])
                board = Board(faulty, retries=cfg["retries"], deadline=cfg.get("deadline"), timeout=cfg["timeout"],
                              seq=cfg["seed"] & 0xFF)
                extra, final, opw = controller_ops(GoldenOracle(gold, FAULT_CELLS))
                return run_session(board, faulty, cfg["frames"], cfg["seed"], source="controller",
                                   stream_check="echo_op", extra_ops=extra, final_check=final, op_weights=opw)
            from sw.board import host_session
            c = Board(tr, timeout=cfg["timeout"], retries=cfg["retries"], deadline=cfg.get("deadline")).open()
            return host_session(c, cfg)

        result = await with_sim_transport(dut, host)
        with open(cfg["out"], "w") as f:
            json.dump(result, f)


def run_host_session(session: str, out_path: str, **cfg) -> dict:
    """Build (cached) and run a co-simulated controller session for the CLI; return its JSON."""
    from tb.cosim.link_cosim import run_session
    return run_session(SESSION_ENV, dict(session=session, out=str(out_path), **cfg),
                       lambda: run_block({"cli": session}, testcase="session", test_module="tb.cosim.host_cosim"))
