"""The board behind an open-loop programmer's ports (rtl/open_programmer.py OpenPairProgrammer, alone
or inside rtl/insitu_path.py InsituPath): the RTL's own copy of the golden Crossbar, its verify
reads (rd_req / rd_rsp) answered from it, its SET / RESET pulses (req) applied to it with golden's
physics, one Crossbar.open_loop per write (the pulses of a write come together; the next verify
read, or flush(), closes the write). Used by tb/test_open_programmer.py, tb/test_insitu_path.py
and the in-situ training co-simulation (tb/cosim/insitu_loop_main.py).

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


def data_layout():
    from amaranth.lib import data
    return data.StructLayout({"code": 8})
