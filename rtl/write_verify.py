"""Closed-loop write-verify sequencer: the control loop of golden.write_verify.write_verify in RTL.

Per cell command on `cmd` ({pe, row, bl, target}, target = verify code of the target read current):

    read; while |code - target| > margin:  if pulses == max_pulses: fail
                                          pulse SET if code < target else RESET; pulses += 1; read

Towards the PE interface the sequencer issues requests on `req` ({op, pe, row, bl, width}:
op READ = a verify read at 0.2 V, SET / RESET = one identical programming pulse of `width`
cycles, values as golden.write_verify.Pulse, READ = 2) and takes the verify ADC code of every READ,
in order, on `rsp` ({code}). Pulses get no response: the PE interface executes requests in
order, so the read after a pulse sees its effect. Every command ends with exactly one result on
`res` ({pe, row, bl, ok, pulses, final_code}), ok = 0 after `max_pulses` pulses without reaching
the window: no cell is skipped silently.

Runtime ports (sampled at every comparison; change them only between commands): `margin`
(codes, default 5 = 100 nA / 20 nA), `max_pulses` (default 500), `pulse_cycles` (pulse width in
clock cycles carried in SET/RESET requests; default 5 = 50 ns at 100 MHz).

Timing (a PE interface that takes requests at once and answers a read in the next cycle): the
result of a cell needing p pulses is valid 5 + 5p cycles after its command is accepted (READ,
WAIT, COMPARE, CHECK, then PULSE/READ/WAIT/COMPARE/CHECK per pulse), one cell every 6 + 5p
cycles; pulse width and read time of the PE interface add to that (a Yao 2020 pulse is 50 ns, a
read 50 ns + ADC).
"""
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class ReqOp(enum.Enum, shape=2):
    SET = 0     # golden.write_verify.Pulse.SET
    RESET = 1   # golden.write_verify.Pulse.RESET
    READ = 2


class WriteVerify(wiring.Component):
    def __init__(self, n_pe: int = 8, n_rows: int = 128, n_bl: int = 16, code_bits: int = 8,
                 count_bits: int = 16, width_bits: int = 8, margin_init: int = 5, max_pulses_init: int = 500,
                 pulse_cycles_init: int = 5):
        self.n_pe, self.n_rows, self.n_bl = n_pe, n_rows, n_bl
        self.code_bits, self.count_bits, self.width_bits = code_bits, count_bits, width_bits
        addr = {"pe": _bits(n_pe), "row": _bits(n_rows), "bl": _bits(n_bl)}
        self.cmd_layout = data.StructLayout({**addr, "target": code_bits})
        self.req_layout = data.StructLayout({"op": ReqOp, **addr, "width": width_bits})
        self.rsp_layout = data.StructLayout({"code": code_bits})
        self.res_layout = data.StructLayout({**addr, "ok": 1, "pulses": count_bits, "final_code": code_bits})
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "req": Out(stream.Signature(self.req_layout)),
            "rsp": In(stream.Signature(self.rsp_layout)),
            "res": Out(stream.Signature(self.res_layout)),
            "margin": In(unsigned(code_bits), init=margin_init),
            "max_pulses": In(unsigned(count_bits), init=max_pulses_init),
            "pulse_cycles": In(unsigned(width_bits), init=pulse_cycles_init),
        })

    def elaborate(self, platform):
        m = Module()
        cell = Signal(self.cmd_layout)
        code = Signal(unsigned(self.code_bits))
        pulses = Signal(unsigned(self.count_bits))
        direction = Signal(ReqOp)
        ok = Signal()

        # for timing the window bounds and the pulse limit are registers: |code - target| <= margin
        # is lo <= code <= hi, two parallel comparisons in COMPARE, registered for CHECK (cell and
        # pulses change >= 2 cycles before: READ and WAIT come first; margin and max_pulses only
        # between commands)
        lo = Signal(signed(self.code_bits + 2))
        hi = Signal(signed(self.code_bits + 2))
        at_max = Signal()
        m.d.sync += [lo.eq(cell.target - self.margin), hi.eq(cell.target + self.margin),
                     at_max.eq(pulses == self.max_pulses)]
        inside = Signal()
        below = Signal()

        for f in ("pe", "row", "bl"):
            m.d.comb += [self.req.payload[f].eq(cell[f]), self.res.payload[f].eq(cell[f])]
        m.d.comb += [self.req.payload.width.eq(self.pulse_cycles),
                     self.res.payload.ok.eq(ok), self.res.payload.pulses.eq(pulses),
                     self.res.payload.final_code.eq(code)]

        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cell.eq(self.cmd.payload), pulses.eq(0)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += [self.req.valid.eq(1), self.req.payload.op.eq(ReqOp.READ)]
                with m.If(self.req.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += self.rsp.ready.eq(1)
                with m.If(self.rsp.valid):
                    m.d.sync += code.eq(self.rsp.payload.code)
                    m.next = "COMPARE"
            with m.State("COMPARE"):
                m.d.sync += [inside.eq((code >= lo) & (code <= hi)), below.eq(code < cell.target)]
                m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(inside):
                    m.d.sync += ok.eq(1)
                    m.next = "RESULT"
                with m.Elif(at_max):
                    m.d.sync += ok.eq(0)
                    m.next = "RESULT"
                with m.Else():
                    m.d.sync += direction.eq(Mux(below, ReqOp.SET, ReqOp.RESET))
                    m.next = "PULSE"
            with m.State("PULSE"):
                m.d.comb += [self.req.valid.eq(1), self.req.payload.op.eq(direction)]
                with m.If(self.req.ready):
                    m.d.sync += pulses.eq(pulses + 1)
                    m.next = "READ"
            with m.State("RESULT"):
                m.d.comb += self.res.valid.eq(1)
                with m.If(self.res.ready):
                    m.next = "IDLE"
        return m


def default_instances():
    return {"write_verify": WriteVerify()}
