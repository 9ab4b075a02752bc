"""The board behind an open-loop programmer's ports (rtl/open_programmer.py OpenPairProgrammer, alone
or inside rtl/insitu_path.py InsituPath): the RTL's own copy of the golden Crossbar, its verify
reads (rd_req / rd_rsp) answered from it, its SET / RESET pulses (req) applied to it with golden's
physics, one Crossbar.open_loop per write (the pulses of a write come together; the next verify
read, or flush(), closes the write). Used by tb/test_open_programmer.py, tb/test_insitu_path.py
and the in-situ training co-simulation (tb/cosim/insitu_loop_main.py). VerifyBoard: the same behind
closed-loop write-verify (InsituPath mode "closed").

Ports on the dut: req__valid/ready/payload (blk.req_layout), rd_req__* (blk.pp.rd_layout),
rd_rsp__* ({code: 8}). Random stalls: req_stall / rd_stall, the probability of ready low on req /
rd_req in a cycle, rsp_idle that of an idle cycle before a response (0: full speed).
"""
import random

from tb import harness


class Board:
    """Board B behind the RTL's ports: verify reads and pulses (cocotb coroutines)."""

    def __init__(self, dut, blk, xb, rng, req_stall=0.4, rd_stall=0.3, rsp_idle=0.3):
        self.dut, self.blk, self.xb, self.rng = dut, blk, xb, rng
        self.req_stall, self.rd_stall, self.rsp_idle = req_stall, rd_stall, rsp_idle
        self.reads, self.pending, self.pulses = [], None, 0     # pending: [cell, op, count]

    def flush(self):
        from golden.devices import RESET, SET
        if self.pending:
            cell, op, n = self.pending
            self.xb.open_loop(*cell, SET if op == 0 else RESET, n)
            self.pending = None

    async def pulses_port(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        d = self.dut
        while True:
            r = self.rng.random() >= self.req_stall
            d.req__ready.value = int(r)
            await ReadOnly()
            if r and bool(d.req__valid.value):
                q = harness.unpack(self.blk.req_layout, int(d.req__payload.value))
                cell = (q["pe"], q["row"], q["bl"])
                if self.pending and self.pending[:2] == [cell, q["op"]]:
                    self.pending[2] += 1
                else:
                    self.flush()
                    self.pending = [cell, q["op"], 1]
                self.pulses += 1
            elif not self.req_stall and not bool(d.req__valid.value):
                await RisingEdge(d.req__valid)      # idle at full speed: no Python per cycle
                continue
            await RisingEdge(d.clk)

    async def reads_port(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        d = self.dut
        rsp = harness.StreamSource(d, "rd_rsp", d.clk, data_layout(), idle=self.rsp_idle, rng=random.Random(5))
        while True:
            r = self.rng.random() >= self.rd_stall
            d.rd_req__ready.value = int(r)
            await ReadOnly()
            got = harness.unpack(self.blk.pp.rd_layout, int(d.rd_req__payload.value)) \
                if r and bool(d.rd_req__valid.value) else None
            await RisingEdge(d.clk)
            if got is None:
                continue
            d.rd_req__ready.value = 0
            self.flush()                        # the previous write is over
            cell = (got["pe"], got["row"], got["bl"])
            self.reads.append(cell)
            await rsp.send([{"code": self.xb.verify_read(*cell)}])


class VerifyBoard(Board):
    """Board B behind closed-loop write-verify (rtl/insitu_path.py mode "closed": Board's ports plus
    `rsp`): `req` also carries READs, each answered in order on `rsp`; the reads and pulses of a cell
    are one golden CellSession (Crossbar.program_cell's physics), ended when another cell is
    addressed, a read comes on rd_req, or on flush(). `results`: the test's tap of the write-verify
    results, one per session (its ok ends the session; cell, pulses and final code are checked).
    `ops`: every request, (op, cell), golden.write_verify.Pulse / READ = 2. Stalls as Board's
    (req_stall also on `req`'s READs and pulses, rsp_idle also on `rsp`)."""

    def __init__(self, dut, req_layout, rd_layout, xb, rng, results, req_stall=0.4, rd_stall=0.3, rsp_idle=0.3):
        from types import SimpleNamespace
        super().__init__(dut, SimpleNamespace(req_layout=req_layout, pp=SimpleNamespace(rd_layout=rd_layout)), xb, rng,
                         req_stall=req_stall, rd_stall=rd_stall, rsp_idle=rsp_idle)
        self.results, self.session, self.ops, self.ended, self.n, self.last = results, None, [], 0, 0, None

    def flush(self):
        s = self.session
        if s is None:
            return
        self.session = None
        assert len(self.results) > self.ended, f"session {s.idx} ended before its write-verify result"
        r = self.results[self.ended]
        got = ((r["pe"], r["row"], r["bl"]), r["pulses"], r["final_code"])
        assert got == (s.idx, self.n, self.last), f"write-verify result {got}, board saw {(s.idx, self.n, self.last)}"
        s.end(bool(r["ok"]), self.n)
        self.ended += 1

    async def pulses_port(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        from golden.write_verify import Pulse
        d = self.dut
        rsp = harness.StreamSource(d, "rsp", d.clk, data_layout(), idle=self.rsp_idle, rng=random.Random(6))
        while True:
            r = self.rng.random() >= self.req_stall
            d.req__ready.value = int(r)
            await ReadOnly()
            q = harness.unpack(self.blk.req_layout, int(d.req__payload.value)) \
                if r and bool(d.req__valid.value) else None
            await RisingEdge(d.clk)
            if q is None:
                continue
            cell = (q["pe"], q["row"], q["bl"])
            if self.session is None or self.session.idx != cell:
                self.flush()
                self.session, self.n, self.last = self.xb.cell_session(*cell), 0, None
            self.ops.append((q["op"], cell))
            if q["op"] == 2:                    # READ
                d.req__ready.value = 0
                self.last = self.session.read()
                await rsp.send([{"code": self.last}])
            else:
                self.session.pulse(Pulse(q["op"]))
                self.n += 1
                self.pulses += 1


def trace_sessions(xb, log):
    """Log golden's write-verify requests on xb as VerifyBoard.ops logs the RTL's: (op, cell), op
    golden.write_verify.Pulse or READ = 2 (wraps xb.cell_session)."""
    orig = xb.cell_session

    def session(pe, row, bl):
        s, cell = orig(pe, row, bl), (pe, row, bl)
        read, pulse = s.read, s.pulse
        s.read = lambda: (log.append((2, cell)), read())[1]
        s.pulse = lambda d: (log.append((int(d), cell)), pulse(d))[1]
        return s
    xb.cell_session = session


def data_layout():
    from amaranth.lib import data
    return data.StructLayout({"code": 8})
