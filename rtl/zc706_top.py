"""Board tops: the controller, the host link and the PE-board PHY, for the ZC706 (and portable).

BoardCore (portable, one `sync` domain, no vendor primitives; the design `mcnn synth` places and
routes on an ECP5 as the timing proxy):

    uart_rx/tx -- LinkTop (rtl/link.py: UART, frames, CSRs) --cmd--> image  --> Controller
                                                          <--rsp-- result <--  (ticked: sync
    fmc_* (registered I/O) -- PeFmcPhy (rtl/pe_fmc.py) <--- 8 PE ports ----->   enabled by `tick`)
    led[4]: heartbeat, controller busy, link active, overrun

  * The controller runs under EnableInserter(tick): one controller cycle per PHY tick (see
    rtl/pe_fmc.py for why). Its streams are crossed tick-aware: a transfer to or from the
    controller happens only in a tick cycle, so both sides agree on every transfer.
  * Link `soft_reset` resets the controller and the PHY (ResetInserter, outside the enable).
  * cmd -> image: the 32-bit words of a STREAM command are the controller's image words (the
    `last` flag is not used by the controller).
  * result -> rsp: PROVISIONAL word format, to be settled with the host driver (sw/driver.py):
    the result struct's bits (controller.result_layout: cls, logits, p, delta) LSB first in
    ceil(bits / 32) words, `last` on the final word; cls is in the low bits of word 0.
  * Controller ports not named here (a future `prog` path, counters) are left unconnected:
    inputs keep their reset values, outputs are unused. The seam for them is this class.
  * ctrl_status (CSR link_ctrl_status): bit 0 overrun, bit 1 image.ready, bit 2 result.valid.

ZC706Top adds the board: the 200 MHz differential system clock (IBUFDS) -> MMCME2_BASE -> 100 MHz
(BUFG) for `sync` (the UART divisor 868 assumes 100 MHz), reset = CPU_RESET button | ~MMCM
locked (synchronised), the FMC bus clock forwarded through an ODDR. Its ports are flat, with the
names constraints/zc706.xdc pins.
"""
from __future__ import annotations

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Const, EnableInserter, Instance, Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from .controller import Controller
from .link import LinkTop
from .pe_fmc import PeFmcPhy

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


class BoardCore(wiring.Component):
    def __init__(self, controller: Controller | None = None, divisor: int = SYS_CLK_HZ // 115200,
                 ready_guard: int = 4, heartbeat_bit: int = 25):
        self.ctrl = controller or default_controller()
        pe_sig = self.ctrl.signature.members["pe"].signature
        self.phy = PeFmcPhy(pe_sig, n_pe=self.ctrl.n_pe, ready_guard=ready_guard)
        self.divisor, self.heartbeat_bit = divisor, heartbeat_bit
        super().__init__({"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "led": Out(4),
                          **fmc_ports(self.phy)})

    def elaborate(self, platform):
        m = Module()
        ctrl, phy = self.ctrl, self.phy
        m.submodules.link = link = LinkTop(divisor=self.divisor)
        soft = link.soft_reset
        m.submodules.phy = ResetInserter({"sync": soft})(phy)
        m.submodules.ctrl = ResetInserter({"sync": soft})(EnableInserter({"sync": phy.tick})(ctrl))
        tick = phy.tick

        m.d.comb += [link.uart_rx.eq(self.uart_rx), self.uart_tx.eq(link.uart_tx)]
        for p in range(ctrl.n_pe):
            wiring.connect(m, ctrl.pe[p], phy.pe[p])

        # FMC pins, registered both ways (the bus protocol tolerates the latency; ready_guard
        # covers the round trip before `ready` is trusted)
        f = phy.fmc
        m.d.sync += [self.fmc_addr.eq(f.addr), self.fmc_we.eq(f.we), self.fmc_apply.eq(f.apply),
                     self.fmc_re.eq(f.re), self.fmc_wdata.eq(f.wdata),
                     f.rdata.eq(self.fmc_rdata), f.rvalid.eq(self.fmc_rvalid), f.ready.eq(self.fmc_ready)]

        # cmd words -> image stream (transfers only in tick cycles)
        m.d.comb += [ctrl.image.payload.eq(link.cmd.payload.data), ctrl.image.valid.eq(link.cmd.valid & tick),
                     link.cmd.ready.eq(ctrl.image.ready & tick)]

        # result -> rsp words
        res_bits = len(ctrl.result.payload.as_value())
        n_words = -(-res_bits // 32)
        held = Signal(n_words * 32)
        widx = Signal(range(n_words + 1))
        busy = Signal()
        sent = Signal()
        with m.If(~busy & ~sent & ctrl.result.valid):
            m.d.sync += [held.eq(ctrl.result.payload.as_value()), widx.eq(0), busy.eq(1)]
        m.d.comb += [link.rsp.valid.eq(busy), link.rsp.payload.data.eq(held.word_select(widx, 32)),
                     link.rsp.payload.last.eq(widx == n_words - 1)]
        with m.If(link.rsp.valid & link.rsp.ready):
            with m.If(widx == n_words - 1):
                m.d.sync += [busy.eq(0), sent.eq(1)]
            with m.Else():
                m.d.sync += widx.eq(widx + 1)
        m.d.comb += ctrl.result.ready.eq(sent & tick)
        with m.If(sent & tick):
            m.d.sync += sent.eq(0)

        m.d.comb += link.ctrl_status.eq(Cat(ctrl.overrun, ctrl.image.ready, ctrl.result.valid))

        hb = Signal(self.heartbeat_bit + 1)
        m.d.sync += hb.eq(hb + 1)
        m.d.comb += self.led.eq(Cat(hb[-1], ~ctrl.image.ready, ~link.idle, ctrl.overrun))
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
