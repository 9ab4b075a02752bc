"""Board tops: the controller, the host link and the PE-board PHY, for the ZC706 (and portable).

BoardCore (portable, one `sync` domain, no vendor primitives; the design `mcnn synth` places and
routes on an ECP5 as the timing proxy):

    uart_rx/tx -- LinkTop (rtl/link.py: UART, frames, CSRs) --cmd/rsp--> HostBridge (rtl/host.py:
                  ctrl CSR block <-> eta, counters             STREAM command set) <-> Controller
    fmc_* (registered I/O) -- PeFmcPhy (rtl/pe_fmc.py) <--- 8 PE ports -------------> (ticked: sync
                              aux port <- ProgChannel <- prog_req/prog_rsp, vread   enabled by `tick`)
    led[4]: heartbeat, controller busy, link active, overrun

  * The controller runs under EnableInserter(tick): one controller cycle per PHY tick (see
    rtl/pe_fmc.py for why). Its streams are crossed tick-aware: a transfer to or from the
    controller happens only in a tick cycle, so both sides agree on every transfer.
  * The PHY, the controller, the bridge and the programming channel run in the `core` domain: the
    `sync` clock, reset by one flip-flop (board reset or the link's `soft_reset`, a cycle later).
    That reset reaches ~15,000 flip-flops: it starts at a register and nothing else resets them, so
    a place-and-route flow can give it a global buffer (`reset_buffer`: the ECP5 timing proxy
    puts it on a DCCA; on the ZC706 Vivado replicates the net, or a BUFG can be added there).
  * STREAM payloads are host commands (rtl/host.py, docs/link.md): INFER / TRAIN / FINISH /
    PROGRAM / READ / ECHO; the bridge runs under the controller's clock enable, so only the
    link <-> bridge streams are crossed tick-aware.
  * Every controller port is connected: learning parameters and counters to the `ctrl` CSR block,
    the write-verify requests (prog_req/prog_rsp) and the verify reads (vread_req/vread_rsp, the
    pair programmer's and the host READ's, arbitrated by the bridge) to the PE board through the
    PHY's auxiliary port (ProgChannel).
  * ctrl_status (CSR link_ctrl_status): bit 0 busy, bit 1 overrun, bit 2 host command active,
    bit 3 a programming answer was lost, bits 8..15 the controller's training status.

ZC706Top adds the board: the 200 MHz differential system clock (IBUFDS) -> MMCME2_BASE -> 100 MHz
(BUFG) for `sync` (the UART divisor 868 assumes 100 MHz), reset = CPU_RESET button | ~MMCM
locked (synchronised), the FMC bus clock forwarded through an ODDR. Its ports are flat, with the
names constraints/zc706.xdc pins.
"""
from __future__ import annotations

from amaranth.hdl import (Cat, ClockDomain, ClockSignal, Const, DomainRenamer, EnableInserter, Instance, Module,
                          ResetSignal, Signal)
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from .controller import Controller
from .host import HostBridge, connect_bridge, connect_ctrl_regs, controller_blocks
from .link import LinkTop
from .pe_fmc import PeFmcPhy
from .replica import EnableCopies, enable_groups

SYS_CLK_HZ = 100_000_000


def fmc_ports(phy: PeFmcPhy) -> dict:
    """Flat FMC pin ports of a board top (FPGA view), in pin-assignment order."""
    return {
        "fmc_addr": Out(phy.addr_bits),
        "fmc_we": Out(1),
        "fmc_apply": Out(1),
        "fmc_re": Out(1),
        "fmc_wdata": Out(phy.dn_width),
        "fmc_rdata": In(phy.up_width),
        "fmc_rvalid": In(1),
        "fmc_ready": In(1),
    }


def default_controller() -> Controller:
    from golden import weights
    from golden.datapath import softmax_params
    w = weights.load()
    return Controller(w.q.requant, softmax_params(w.q.logit_scale))


class ProgPortSignature(wiring.Signature):
    """The programming / verify-read channel as one more PHY port (FPGA view, Out = to the board).

    Per tick: req_valid + req (a write-verify request {op, pe, row, bl, width}: SET / RESET pulse or
    verify READ) and vrd_valid + vrd (a single-cell verify read {pe, row, bl} of the pair
    programmer or the host READ command). The board executes them before raising `ready` and
    answers a READ with rsp_valid + rsp_code and a verify read with vrsp_valid + vrsp_code in the
    port's up word of the same tick."""

    def __init__(self, req_width, vrd_width, code_bits=8):
        super().__init__({
            "req_valid": Out(1), "req": Out(req_width),
            "vrd_valid": Out(1), "vrd": Out(vrd_width),
            "rsp_valid": In(1), "rsp_code": In(code_bits),
            "vrsp_valid": In(1), "vrsp_code": In(code_bits),
        })


class ProgChannel(wiring.Component):
    """Streams <-> ProgPortSignature, in the controller's (ticked) domain: a request is carried in
    the tick in which it is transferred (the board takes one of each per tick: ready = 1); an
    answer, valid for one tick in the up word, waits in a one-entry buffer until it is taken."""

    def __init__(self, req_layout, rd_layout, code_bits=8):
        self.req_layout, self.rd_layout = req_layout, rd_layout
        code = data.StructLayout({"code": code_bits})
        self.port_sig = ProgPortSignature(req_layout.size, rd_layout.size, code_bits)
        super().__init__({
            "prog_req": In(stream.Signature(req_layout)),
            "prog_rsp": Out(stream.Signature(code)),
            "vread_req": In(stream.Signature(rd_layout)),
            "vread_rsp": Out(stream.Signature(code)),
            "port": Out(self.port_sig),
            "lost": Out(1),              # sticky: an answer arrived while the previous one was waiting
        })

    def elaborate(self, platform):
        m = Module()
        p = self.port
        m.d.comb += [p.req_valid.eq(self.prog_req.valid), p.req.eq(self.prog_req.payload), self.prog_req.ready.eq(1),
                     p.vrd_valid.eq(self.vread_req.valid), p.vrd.eq(self.vread_req.payload),
                     self.vread_req.ready.eq(1)]
        for valid, code, out in ((p.rsp_valid, p.rsp_code, self.prog_rsp), (p.vrsp_valid, p.vrsp_code, self.vread_rsp)):
            with m.If(out.valid & out.ready):
                m.d.sync += out.valid.eq(0)
            with m.If(valid):
                m.d.sync += [out.valid.eq(1), out.payload.code.eq(code)]
                with m.If(out.valid & ~out.ready):
                    m.d.sync += self.lost.eq(1)
        return m


def register_fmc_pins(m, f, pins):
    """The FMC pins, registered both ways between the PHY's bus `f` and `pins` (fmc_addr, fmc_wdata,
    fmc_we, fmc_apply, fmc_re, fmc_rdata, fmc_rvalid, fmc_ready): the bus protocol tolerates the
    latency; ready_guard covers the round trip before `ready` is trusted. The data registers are
    reset-less (only the strobes must be low in reset), so their flip-flops have no reset net (timing)."""
    io_d = {n: Signal.like(getattr(pins, f"fmc_{n}"), name=f"fmc_{n}_r", reset_less=True)
            for n in ("addr", "wdata", "rdata")}
    m.d.sync += [io_d["addr"].eq(f.addr), io_d["wdata"].eq(f.wdata), io_d["rdata"].eq(pins.fmc_rdata)]
    m.d.comb += [pins.fmc_addr.eq(io_d["addr"]), pins.fmc_wdata.eq(io_d["wdata"]), f.rdata.eq(io_d["rdata"])]
    m.d.sync += [pins.fmc_we.eq(f.we), pins.fmc_apply.eq(f.apply), pins.fmc_re.eq(f.re),
                 f.rvalid.eq(pins.fmc_rvalid), f.ready.eq(pins.fmc_ready)]


READY_GUARD = 4      # PHY cycles before `ready` is trusted after `apply` (covers the pin registers' round trip)


class BoardCore(wiring.Component):
    def __init__(self, controller: Controller | None = None, divisor: int = SYS_CLK_HZ // 115200,
                 ready_guard: int = READY_GUARD, heartbeat_bit: int = 25, reset_buffer=None):
        self.ctrl = controller or default_controller()
        self.reset_buffer = reset_buffer    # (module, signal) -> signal: e.g. a global buffer
        pe_sig = self.ctrl.signature.members["pe"].signature
        self.bridge = HostBridge(self.ctrl)
        # the controller's large register groups, from its netlist (rtl/replica.py enable_groups: it
        # elaborates the controller once here; EnableCopies checks the names again in elaborate)
        self.ctrl_groups = enable_groups(self.ctrl)
        self.chan = ProgChannel(self.ctrl.wv.req_layout, self.ctrl.pp.rd_layout, self.ctrl.code_bits)
        self.phy = PeFmcPhy(pe_sig, n_pe=self.ctrl.n_pe, ready_guard=ready_guard, aux_sig=self.chan.port_sig,
                            aux_request=("req_valid", "vrd_valid"), tick_copies=len(self._tick_names()))
        self.divisor, self.heartbeat_bit = divisor, heartbeat_bit
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "led": Out(4),
                          **fmc_ports(self.phy)})

    def _tick_names(self):
        """Who takes a `tick` copy of their own (PHY tick_dup in this order): the controller's large
        register groups (submodule paths, `enable_groups`), the host bridge, the glue here
        (programming channel, link crossing)."""
        return [*self.ctrl_groups, "host", "glue"]

    def elaborate(self, platform):
        m = Module()
        ctrl, phy, br, chan = self.ctrl, self.phy, self.bridge, self.chan
        m.submodules.link = link = LinkTop(divisor=self.divisor, blocks=controller_blocks(ctrl))
        tick = phy.tick
        # the `core` domain (see the module docstring): reset = one register, set by the board's
        # reset (its init value) or the link's soft reset
        core_rst = Signal(init=1)
        m.d.sync += core_rst.eq(link.soft_reset)
        rst_net = self.reset_buffer(m, core_rst) if self.reset_buffer else core_rst
        m.domains.core = ClockDomain("core", local=True)
        m.d.comb += [ClockSignal("core").eq(ClockSignal("sync")), ResetSignal("core").eq(rst_net)]
        m.submodules.phy = DomainRenamer("core")(phy)
        # the enable reaches ~4,600 loads: the controller's large register groups, the bridge and
        # the glue here (programming channel, link crossing) each take a copy of their own
        # (rtl/replica.py), the rest of the controller the original
        dup = dict(zip(self._tick_names(), (phy.tick_dup[k] for k in range(phy.tick_copies))))
        tick_host, tick_glue = dup.pop("host"), dup.pop("glue")
        m.submodules.ctrl = DomainRenamer("core")(EnableCopies(tick, dup)(ctrl))
        m.submodules.host = DomainRenamer("core")(EnableInserter({"sync": tick_host})(br))
        m.submodules.prog_chan = DomainRenamer("core")(EnableInserter({"sync": tick_glue})(chan))

        m.d.comb += [link.uart_rx.eq(self.uart_rx), self.uart_tx.eq(link.uart_tx)]
        for p in range(ctrl.n_pe):
            wiring.connect(m, ctrl.pe[p], phy.pe[p])
        wiring.connect(m, chan.port, phy.aux)

        register_fmc_pins(m, phy.fmc, self)

        # link <-> host bridge: transfers only in tick cycles (the bridge runs with the controller)
        m.d.comb += [br.cmd.payload.eq(link.cmd.payload), br.cmd.valid.eq(link.cmd.valid & tick_glue),
                     link.cmd.ready.eq(br.cmd.ready & tick_glue),
                     link.rsp.payload.eq(br.rsp.payload), link.rsp.valid.eq(br.rsp.valid & tick_glue),
                     br.rsp.ready.eq(link.rsp.ready & tick_glue)]
        # host bridge <-> controller (same clock enable: plain connections)
        connect_bridge(m, br, ctrl)
        # the PE board's programming and verify-read channels, over the PHY's aux port
        wiring.connect(m, ctrl.prog_req, chan.prog_req)
        wiring.connect(m, chan.prog_rsp, ctrl.prog_rsp)
        wiring.connect(m, br.vread_req, chan.vread_req)
        wiring.connect(m, chan.vread_rsp, br.vread_rsp)

        connect_ctrl_regs(m, link.regs, ctrl, br)
        m.d.comb += link.ctrl_status.eq(ctrl.busy | (ctrl.overrun << 1) | (br.active << 2) | (chan.lost << 3)
                                        | (ctrl.status << 8))

        hb = Signal(self.heartbeat_bit + 1)
        m.d.sync += hb.eq(hb + 1)
        m.d.sync += self.led.eq(Cat(hb[-1], ctrl.busy, ~link.idle, ctrl.overrun))   # (registered: pads)
        return m


class ZC706Top(wiring.Component):
    """The ZC706 board top (module mcnn_zc706). Ports = package pins (constraints/zc706.xdc)."""

    def __init__(self, core: BoardCore | None = None):
        self.core = core or BoardCore()
        super().__init__({
            "clk200_p": In(1), "clk200_n": In(1), "cpu_reset": In(1),
            "uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "led": Out(4),
            "fmc_clk": Out(1),
            **fmc_ports(self.core.phy),
        })

    def elaborate(self, platform):
        m = Module()
        clk200, clk100, fb, locked = Signal(), Signal(), Signal(), Signal()
        m.submodules.ibufds_clk200 = Instance("IBUFDS", i_I=self.clk200_p, i_IB=self.clk200_n, o_O=clk200)
        # VCO 200 MHz * 5 = 1000 MHz (600..1440 MHz for -2), / 10 = 100 MHz
        m.submodules.mmcm = Instance(
            "MMCME2_BASE", p_CLKIN1_PERIOD=5.0, p_DIVCLK_DIVIDE=1, p_CLKFBOUT_MULT_F=5.0,
            p_CLKOUT0_DIVIDE_F=10.0, i_CLKIN1=clk200, i_CLKFBIN=fb, o_CLKFBOUT=fb, o_CLKOUT0=clk100,
            o_LOCKED=locked, i_RST=Const(0), i_PWRDWN=Const(0))
        m.domains.sync = ClockDomain("sync")
        m.submodules.bufg_sys = Instance("BUFG", i_I=clk100, o_O=ClockSignal("sync"))
        m.submodules.rst_sync = ResetSynchronizer(self.cpu_reset | ~locked, domain="sync")
        # forwarded bus clock: the PE board samples fmc_* on its rising edge
        m.submodules.oddr_fmc_clk = Instance(
            "ODDR", p_DDR_CLK_EDGE="SAME_EDGE", i_C=ClockSignal("sync"), i_CE=Const(1), i_D1=Const(1),
            i_D2=Const(0), i_R=Const(0), i_S=Const(0), o_Q=self.fmc_clk)
        m.submodules.core = core = self.core
        for name, mem in core.signature.members.items():
            if mem.flow == In:
                m.d.comb += getattr(core, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(core, name))
        return m


def default_instances():
    # ZC706Top instantiates Xilinx primitives (no Verilator lint without their models): it is
    # written by `mcnn synth` (sw/synth.py), not by `make verilog`.
    return {"mcnn_board_core": BoardCore()}
