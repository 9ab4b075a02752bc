"""Write-verify sequencer (rtl/write_verify.py) against golden.write_verify.write_verify.

A behavioural cell model stands in for the PE interface: each cell has its own seeded RNG; a
SET raises its code by a random 0..up, a RESET lowers it by 0..down, reads add a random -1/0/+1
of noise, stuck cells never move (they must fail at max_pulses). The testbench builds two
identical copies of every cell: the RTL drives one through its request/response streams, the
golden loop drives the other. Expected per command: golden's (ok, pulses, final_code) and the
exact sequence of reads and pulse directions (with addresses); pulse widths must equal the
runtime port. Phases change the runtime ports (margin, max_pulses, pulse width) and the random
idle / back-pressure on all four streams.
"""
import random

import pytest

from tb import harness

# ------------------------------------------------------------------ cocotb side
try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None


class Cell:
    """Behavioural 1T1R cell in verify codes; deterministic given its seed and the call sequence."""

    def __init__(self, seed, code, cmax, up=6, down=6, stuck=False):
        self.rng, self.g, self.cmax, self.up, self.down, self.stuck = random.Random(seed), code, cmax, up, down, stuck

    def read(self):
        return min(max(self.g + self.rng.choice((-1, 0, 0, 0, 1)), 0), self.cmax)

    def pulse(self, direction):  # golden.write_verify.Pulse: SET = 0 (up), RESET = 1 (down)
        if self.stuck:
            return
        step = self.rng.randint(0, self.up if direction == 0 else self.down)
        self.g = min(max(self.g + (step if direction == 0 else -step), 0), self.cmax)


def make_cells(spec, rng, blk, cmax):
    """n cells at random addresses: {addr: constructor args} (built twice, RTL copy and golden copy)."""
    cells = {}
    while len(cells) < spec["cells"]:
        addr = (rng.randrange(blk.n_pe), rng.randrange(blk.n_rows), rng.randrange(blk.n_bl))
        stuck = len(cells) < spec.get("stuck", 0)
        cells[addr] = dict(seed=rng.randrange(1 << 30), code=rng.randint(0, cmax), cmax=cmax,
                           up=rng.randint(1, 6), down=rng.randint(1, 6), stuck=stuck)
    return cells


def make_targets(spec, rng, cells, cmax):
    from golden.write_verify import level_target_code
    levels = [c for c in (level_target_code(lv) for lv in range(8)) if c <= cmax]
    addrs = list(cells)
    out = []
    for i in range(spec["cmds"]):
        addr = addrs[i] if i < len(addrs) else rng.choice(addrs)   # every cell once, then repeats
        kind = rng.random()
        t = (rng.choice(levels) if levels and kind < 0.6 else rng.choice((0, cmax)) if kind < 0.7
             else rng.randint(0, cmax))
        if cells[addr]["stuck"]:  # half the code range away: a stuck cell can only fail
            t = (cells[addr]["code"] + (cmax + 1) // 2) % (cmax + 1)
        out.append((addr, t))
    return out


def golden_run(cells, targets, margin, max_pulses, width):
    """golden.write_verify.write_verify on its own identical copy of the cells: results and request log."""
    from golden.write_verify import Pulse, write_verify
    gcells = {a: Cell(**c) for a, c in cells.items()}
    log, expected = [], []
    for addr, t in targets:
        c = gcells[addr]

        def read(c=c, addr=addr):
            log.append(("READ", addr))
            return c.read()

        def pulse(d, c=c, addr=addr):
            log.append((Pulse(d).name, addr, width))
            c.pulse(int(d))

        r = write_verify(read, pulse, t, margin, max_pulses)
        expected.append(dict(pe=addr[0], row=addr[1], bl=addr[2], ok=int(r.ok), pulses=r.pulses,
                             final_code=r.final_code))
    return expected, log


if cocotb is not None:
    from cocotb.triggers import ReadOnly, RisingEdge

    OPS = {0: "SET", 1: "RESET", 2: "READ"}

    class PEModel:
        """PE interface: takes requests (random back-pressure), answers reads (random latency)."""

        def __init__(self, dut, blk, rng):
            self.dut, self.blk, self.rng = dut, blk, rng
            self.rsp = harness.StreamSource(dut, "rsp", dut.clk, blk.rsp_layout, rng=random.Random(rng.random()))
            self.cells, self.log, self.bp = {}, [], 0.0

        async def run(self):
            dut = self.dut
            while True:
                r = self.rng.random() >= self.bp
                dut.req__ready.value = int(r)
                await ReadOnly()
                got = harness.unpack(self.blk.req_layout, int(dut.req__payload.value)) \
                    if r and bool(dut.req__valid.value) else None
                await RisingEdge(dut.clk)
                if got is None:
                    continue
                dut.req__ready.value = 0
                addr, op = (got["pe"], got["row"], got["bl"]), OPS[got["op"]]
                if op == "READ":
                    self.log.append((op, addr))
                    await self.rsp.send([{"code": self.cells[addr].read()}])
                else:
                    self.log.append((op, addr, got["width"]))
                    self.cells[addr].pulse(got["op"])
                    for _ in range(got["width"] - 1):   # the pulse itself
                        await RisingEdge(dut.clk)

    @cocotb.test()
    async def write_verify_phases(dut):
        from rtl.write_verify import WriteVerify
        p = harness.params()
        blk = WriteVerify(**p["block"])
        cmax = (1 << blk.code_bits) - 1
        rng = random.Random(p["seed"])
        await harness.start_clock_and_reset(dut)
        src = harness.StreamSource(dut, "cmd", dut.clk, blk.cmd_layout, rng=random.Random(rng.random()))
        sink = harness.StreamSink(dut, "res", dut.clk, blk.res_layout, rng=random.Random(rng.random()))
        pe = PEModel(dut, blk, random.Random(rng.random()))
        cocotb.start_soon(sink.run())
        cocotb.start_soon(pe.run())
        n_res = n_fail = n_pulses = 0
        for ph, spec in enumerate(p["phases"]):
            margin, max_p, width = spec["margin"], spec["max_pulses"], spec["width"]
            dut.margin.value, dut.max_pulses.value, dut.pulse_cycles.value = margin, max_p, width
            src.idle, sink.bp, pe.bp, pe.rsp.idle = spec["idle"], spec["bp"], spec["bp"], spec["idle"]
            cells = make_cells(spec, rng, blk, cmax)
            targets = make_targets(spec, rng, cells, cmax)
            expected, glog = golden_run(cells, targets, margin, max_p, width)
            pe.cells, pe.log = {a: Cell(**c) for a, c in cells.items()}, []
            start = len(sink.items)
            await src.send([dict(pe=a[0], row=a[1], bl=a[2], target=t) for a, t in targets])
            got = (await sink.wait_for(start + len(expected)))[start:]
            for _ in range(10):
                await RisingEdge(dut.clk)
            assert len(sink.items) == start + len(expected), f"phase {ph}: extra results"
            for i, (g, e) in enumerate(zip(got, expected)):
                assert g == e, f"phase {ph} command {i} (target {targets[i][1]}): got {g}, expected {e}"
            assert len(pe.log) == len(glog), f"phase {ph}: {len(pe.log)} PE requests, golden made {len(glog)}"
            for i, (g, e) in enumerate(zip(pe.log, glog)):
                assert g == e, f"phase {ph} request {i}: got {g}, expected {e}"
            n_res += len(expected)
            n_fail += sum(1 - e["ok"] for e in expected)
            n_pulses += sum(e["pulses"] for e in expected)
            dut._log.info(f"phase {ph}: {len(expected)} cells ({sum(1 - e['ok'] for e in expected)} failed), "
                          f"{sum(e['pulses'] for e in expected)} pulses, {len(glog)} requests; margin {margin} "
                          f"max_pulses {max_p} width {width} idle/bp {spec['idle']}/{spec['bp']}")
        dut._log.info(f"{n_res} results compared ({n_fail} failed cells, {n_pulses} pulses)")


# ------------------------------------------------------------------ pytest side
def _ph(cells, cmds, margin=5, max_pulses=500, width=5, idle=0.0, bp=0.0, stuck=0):
    return dict(cells=cells, cmds=cmds, margin=margin, max_pulses=max_pulses, width=width, idle=idle, bp=bp,
                stuck=stuck)


CONFIGS = [
    dict(block=dict(), phases=[
        _ph(40, 60, stuck=2),                                              # Yao 2020 defaults
        _ph(40, 80, max_pulses=8, width=2, idle=0.3, bp=0.4, stuck=4),   # frequent failures, back-pressure
        _ph(10, 20, margin=0, max_pulses=30, width=1, idle=0.2, bp=0.2),   # exact target
        _ph(8, 12, margin=255, width=1),                                   # always inside: 0 pulses
        _ph(10, 16, max_pulses=0, width=1, idle=0.1, bp=0.5),              # no pulse allowed
        _ph(6, 10, margin=2, max_pulses=65535, width=3, bp=0.3),           # widest counter
    ]),
    dict(block=dict(n_pe=2, n_rows=32, n_bl=8, code_bits=6, count_bits=10, width_bits=3), phases=[
        _ph(30, 50, margin=2, max_pulses=1023, width=7, idle=0.2, bp=0.3, stuck=1),
        _ph(30, 60, margin=1, max_pulses=8, width=1, idle=0.4, bp=0.6, stuck=3),
        _ph(6, 10, margin=63, width=1),
    ]),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["yao2020", "small"])
def test_write_verify(cfg):
    from rtl.write_verify import WriteVerify
    harness.run_block(WriteVerify(**cfg["block"]), "write_verify", "tb.test_write_verify", dict(cfg, seed=777))
