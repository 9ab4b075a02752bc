"""Pair programmer (rtl/pair_programmer.py) against golden.hybrid.pair_plan, the closed-loop rule of
golden.hybrid.PairProgrammer.apply.

Environment (cocotb models around the block): the verify-read path takes `rd_req` (random
back-pressure) and answers on `rd_rsp` (random idle) with the code of the cell in a dict of cell
codes; the write-verify sequencer takes `wv_cmd` (random back-pressure) and answers each command
1..25 cycles later on `wv_res` / `wv_res_fire` (random junk on `wv_res` otherwise): a success
leaves the cell within the verify margin of its target, "weak" cells fail half the time (the cell
then moves part of the way). Between batches the host re-programs some cells to edge codes and its
own write-verify results (ok = 0, block idle) pass on `wv_res`: they must block nothing.
The commands come on `cmd` (random idle) with the fields of the update engine's `out_layout`
(d_code 16 bits wide here), each batch closed by the end-of-batch marker (junk in its other
fields, random overflow flag); empty batches too.

Expected per batch, from golden only (golden.hybrid.pair_plan per command, on a deep copy of the
cells that the same outcomes drive; a cell whose write-verify failed is blocked, as golden's
PairProgrammer does): the verify reads (c+ then c- of every command), the write-verify commands in
order (cell, target), the marker on `done` with its overflow flag, only after every write-verify
result of the batch (and `busy` low then), the blocked-cell RAM equal to golden's blocked set, the
cell codes equal to the golden copy's.
Edge cases, each counted and required: d = 0; |d| with no room at all (both devices at or beyond
the lo / hi limits); saturation (|d| beyond the rooms); a part within the margin moved to the
other device, or dropped; a blocked cell changing the split; |d| around and beyond 2**(code_bits+1)
(the RTL's clamp) up to the largest and most negative d_code; host results between batches.

Mutations seen caught (each made in rtl/pair_programmer.py, then reverted): SPLIT_C's
`a_small & ab_le_u` -> `a_small` (a small "down" part moved without checking the up device's
room): "batch 5 write-verify 3: got ((0, 3, 3), 205), expected ((0, 3, 3), 200)"; the blocked-RAM
write on every failed result, `mine & ~r.ok` -> `wv_res_fire & ~r.ok` (host results block cells):
"batch 1: blocked RAM {...} vs set()"; the |d| clamp at 2**code_bits instead of 2**(code_bits+1);
no blocked-RAM write at all; WAIT_WV and DRAIN not waiting for the results: "batch 0: done
(overflow, results seen, busy) (0, 0, 1), expected (0, 1, 0)". WAIT_WV alone not waiting: the next
command's verify reads miss the last programming (wrong targets). DRAIN alone not waiting is not
observable: IDLE is entered only with no result pending, so the marker's DRAIN wait never waits.
"""
import copy
import functools
import random

import pytest

from tb import harness

SMALL = dict(n_pe=3, n_rows=8, n_bl=5, code_bits=8, lo=25, hi=200, margin=5)
D_BITS = 16                 # d_code width of the commands (the update engine's is wider)
P_FAIL = 0.5                # failure probability of a weak cell's write-verify


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def layouts(p):
    """The block's stream layouts (the update engine's command, the write-verify command and result)."""
    from amaranth.hdl import signed
    from amaranth.lib import data
    b = _bits
    addr = {"pe": b(p["n_pe"]), "row": b(p["n_rows"]), "bl": b(p["n_bl"])}
    cmd = data.StructLayout({"pe": b(p["n_pe"]), "row_pos": b(p["n_rows"]), "bl": b(p["n_bl"]), "m": 4, "n": 3,
                             "d_code": signed(D_BITS), "end": 1, "overflow": 1})
    wv_cmd = data.StructLayout({**addr, "target": p["code_bits"]})
    wv_res = data.StructLayout({**addr, "ok": 1, "pulses": 16, "final_code": p["code_bits"]})
    return cmd, wv_cmd, wv_res


def make_block(p):
    from rtl.pair_programmer import PairProgrammer
    return PairProgrammer(*layouts(p), **p)


class Cells:
    """Cell codes and write-verify outcomes, deterministic given the seed and the call sequence
    (the RTL's environment drives one copy, the golden run a deep copy)."""

    def __init__(self, codes, weak, seed, margin, cmax):
        self.codes, self.weak, self.rng, self.margin, self.cmax = codes, weak, random.Random(seed), margin, cmax

    def program(self, cell, target) -> bool:
        now = self.codes[cell]
        if cell in self.weak and self.rng.random() < P_FAIL:
            self.codes[cell] = now + (target - now) // 2
            return False
        self.codes[cell] = min(max(target + self.rng.randint(-self.margin, self.margin), 0), self.cmax)
        return True


def edge_code(rng, p):
    lo, hi, mg, cmax = p["lo"], p["hi"], p["margin"], (1 << p["code_bits"]) - 1
    return rng.choice([lo, hi, lo - 1, hi + 1, 0, cmax, rng.randint(lo + 1, lo + mg + 1), rng.randint(lo + 1, lo + mg),
                       rng.randint(hi - mg - 1, hi - 1), rng.randint(0, lo), rng.randint(hi, cmax),
                       rng.randint(lo, hi), rng.randint(lo, hi)])


def pick_d(rng, p):
    cb, mg, span = p["code_bits"], p["margin"], p["hi"] - p["lo"]
    dmax = (1 << (D_BITS - 1)) - 1
    k, s = rng.random(), rng.choice((-1, 1))
    if k < 0.1:
        return 0
    if k < 0.4:
        return s * rng.randint(1, 2 * mg + 2)                 # parts within the margin
    if k < 0.75:
        return s * rng.randint(1, span + 10)
    if k < 0.9:
        big = 1 << (cb + 1)                                   # the RTL's clamp of |d|
        return s * rng.choice((big - 1, big, big + 1, rng.randint(big, 5000)))
    return rng.choice((dmax, -dmax - 1, -dmax, dmax - 1))     # the extremes of d_code


def golden_plan(d, pos, neg, cp, cn, p, blocked, res):
    """golden.hybrid.pair_plan in closed loop (the resolution is the verify margin `res`)."""
    from golden.hybrid import pair_plan
    return pair_plan(d, pos, neg, cp, cn, p["lo"], p["hi"], blocked, lambda code, direction: res)


def golden_batch(cmds, cells, blocked, p):
    """Expected verify reads and write-verify commands of one batch (golden.hybrid.pair_plan per
    command); `cells` and `blocked` are advanced as the batch programs them. Also the edge cases hit."""
    reads, wv, hits = [], [], []
    for c in cmds:
        pos, neg = (c["pe"], c["row_pos"], c["bl"]), (c["pe"], c["row_pos"] + 1, c["bl"])
        reads += [pos, neg]
        plan = functools.partial(golden_plan, c["d_code"], pos, neg, cells.codes[pos], cells.codes[neg], p)
        need, applied, writes = plan(blocked, p["margin"])
        hits += _edge_cases(c["d_code"], plan, blocked, p)
        for cell, _, target, _ in writes:
            wv.append((cell, target))
            if not cells.program(cell, target):
                blocked.add(cell)
    return reads, wv, hits


def _edge_cases(d, plan, blocked, p):
    """Which edge cases a command exercises (golden's plan with the margin / blocked set off)."""
    need, applied, writes = plan(blocked, p["margin"])
    free = plan(set(), p["margin"])[2]
    raw = plan(blocked, 0)
    hits = ["d0"] if d == 0 else []
    hits += ["no_room"] if need and plan(set(), 0)[1] == 0 else []
    hits += ["saturated"] if raw[1] < need else []
    hits += ["blocked"] if free != writes else []
    hits += ["margin_moved"] if raw[1] == applied and raw[2] != writes and applied else []
    hits += ["margin_dropped"] if applied < raw[1] else []
    hits += ["clamp"] if need >= 1 << (p["code_bits"] + 1) else []
    hits += ["d_max"] if need >= (1 << (D_BITS - 1)) - 1 else []
    return hits


def make_batch(rng, pairs, p, cmd_layout):
    n = rng.choice((0, 1, 2, 5, 12, 20, 20, 20))
    out = []
    pe, row, bl = rng.choice(pairs)
    for _ in range(n):
        if rng.random() > 0.3:    # else the same pair again: its reads must see the last programming
            pe, row, bl = rng.choice(pairs)
        out.append(dict(pe=pe, row_pos=row, bl=bl, m=rng.randrange(16), n=rng.randrange(8),
                        d_code=pick_d(rng, p), end=0, overflow=0))
    return out


# ------------------------------------------------------------------ cocotb side
try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None

if cocotb is not None:
    from amaranth.lib import data
    from cocotb.triggers import ReadOnly, RisingEdge

    class VerifyPath:
        """rd_req (back-pressure) -> rd_rsp (idle): the cell's current code."""

        def __init__(self, dut, blk, cells, rng):
            self.req = harness.StreamSink(dut, "rd_req", dut.clk, blk.rd_layout, rng=random.Random(rng.random()))
            self.rsp = harness.StreamSource(dut, "rd_rsp", dut.clk, data.StructLayout({"code": blk.code_bits}),
                                            rng=random.Random(rng.random()))
            self.clk, self.cells = dut.clk, cells

        async def run(self):
            cocotb.start_soon(self.req.run())
            n = 0
            while True:
                if len(self.req.items) <= n:
                    await RisingEdge(self.clk)
                    continue
                r = self.req.items[n]
                n += 1
                code = self.cells.codes[(r["pe"], r["row"], r["bl"])]    # read as the request is taken
                await self.rsp.send([{"code": code}])

    class Sequencer:
        """wv_cmd (back-pressure) -> one wv_res_fire cycle 1..25 cycles later; host results on request."""

        def __init__(self, dut, res_layout, cmd_layout, cells, rng):
            self.dut, self.res_layout, self.cells, self.rng = dut, res_layout, cells, rng
            self.cmd = harness.StreamSink(dut, "wv_cmd", dut.clk, cmd_layout, rng=random.Random(rng.random()))
            self.delivered, self.host = 0, []

        def _drive(self, cell, ok):
            self.dut.wv_res.value = harness.pack(self.res_layout, pe=cell[0], row=cell[1], bl=cell[2], ok=ok,
                                                 pulses=self.rng.randrange(1 << 16), final_code=self.rng.randrange(256))
            self.dut.wv_res_fire.value = 1

        async def run(self):
            dut = self.dut
            cocotb.start_soon(self.cmd.run())
            n = 0
            while True:
                dut.wv_res_fire.value = 0
                if len(self.cmd.items) > n:
                    for _ in range(self.rng.choice((0, 0, 1, 2, 5, 11, 24))):
                        await RisingEdge(dut.clk)
                    c = self.cmd.items[n]
                    n += 1
                    cell = (c["pe"], c["row"], c["bl"])
                    self._drive(cell, int(self.cells.program(cell, c["target"])))
                    await RisingEdge(dut.clk)
                    self.delivered += 1
                    continue
                if self.host:                 # the host's own write-verify results (failed)
                    self._drive(self.host.pop(), 0)
                else:                         # no result: junk on the payload
                    dut.wv_res.value = self.rng.randrange(1 << self.res_layout.size)
                await RisingEdge(dut.clk)

    async def watch_done(dut, seq, log):
        """At every `done` transfer: (overflow, results delivered, busy)."""
        while True:
            await ReadOnly()
            if int(dut.done__valid.value) and int(dut.done__ready.value):
                log.append((int(dut.done__payload.value), seq.delivered, int(dut.busy.value)))
            await RisingEdge(dut.clk)

    def blocked_ram(dut, blk):
        n = blk.n_pe * blk.n_rows * blk.n_bl
        return {(a // blk.n_bl // blk.n_rows, a // blk.n_bl % blk.n_rows, a % blk.n_bl)
                for a in range(n) if int(dut.blocked[a].value)}

    def setup_cells(rng, p, blk):
        pairs = sorted({(rng.randrange(blk.n_pe), 2 * rng.randrange(blk.n_rows // 2), rng.randrange(blk.n_bl))
                        for _ in range(10)} | {(0, 0, 0), (blk.n_pe - 1, blk.n_rows - 2, blk.n_bl - 1)})
        cells = [(pe, r + k, bl) for pe, r, bl in pairs for k in (0, 1)]
        codes = {c: edge_code(rng, p) for c in cells}
        weak = set(rng.sample(cells, len(cells) // 5))
        return pairs, cells, Cells(codes, weak, rng.randrange(1 << 30), p["margin"], (1 << blk.code_bits) - 1)

    @cocotb.test()
    async def pair_programmer_batches(dut):
        p = harness.params()
        blk = make_block(p["block"])
        cmd_l, wv_l, res_l = layouts(p["block"])
        rng = random.Random(p["seed"])
        await harness.start_clock_and_reset(dut)
        pairs, cells_list, cells = setup_cells(rng, p["block"], blk)
        src = harness.StreamSource(dut, "cmd", dut.clk, cmd_l, rng=random.Random(rng.random()))
        vp = VerifyPath(dut, blk, cells, rng)
        seq = Sequencer(dut, res_l, wv_l, cells, random.Random(rng.random()))
        done = harness.StreamSink(dut, "done", dut.clk, data.StructLayout({"overflow": 1}),
                                  rng=random.Random(rng.random()))
        done_log = []
        for co in (vp.run(), seq.run(), done.run(), watch_done(dut, seq, done_log)):
            cocotb.start_soon(co)
        blocked, hits, n_wv, n_cmd = set(), {}, 0, 0
        for bi in range(p["batches"]):
            idle, bp = p["phases"][bi % len(p["phases"])]
            src.idle, vp.rsp.idle, vp.req.bp, seq.cmd.bp, done.bp = idle, idle, bp, bp, bp
            cmds = make_batch(rng, pairs, p["block"], cmd_l)
            gold = copy.deepcopy(cells)
            reads, wv, h = golden_batch(cmds, gold, blocked, p["block"])
            for x in h:
                hits[x] = hits.get(x, 0) + 1
            ovf = rng.randrange(2)
            end = dict(pe=rng.randrange(blk.n_pe), row_pos=rng.randrange(blk.n_rows), bl=rng.randrange(blk.n_bl),
                       m=rng.randrange(16), n=rng.randrange(8), d_code=rng.randrange(-999, 999), end=1, overflow=ovf)
            r0, w0 = len(vp.req.items), len(seq.cmd.items)
            await src.send(cmds + [end])
            await done.wait_for(bi + 1, timeout_cycles=100_000)
            for _ in range(15):   # nothing more may come out
                await RisingEdge(dut.clk)
            got_r = [(r["pe"], r["row"], r["bl"]) for r in vp.req.items[r0:]]
            got_w = [((w["pe"], w["row"], w["bl"]), w["target"]) for w in seq.cmd.items[w0:]]
            assert got_r == reads, f"batch {bi}: verify reads {got_r}, expected {reads}"
            for i, (g, e) in enumerate(zip(got_w, wv)):
                assert g == e, f"batch {bi} write-verify {i}: got {g}, expected {e}"
            assert len(got_w) == len(wv), f"batch {bi}: {len(got_w)} write-verify commands, expected {len(wv)}"
            n_wv += len(wv)
            n_cmd += len(cmds)
            assert len(done.items) == bi + 1 and done.items[bi]["overflow"] == ovf, f"batch {bi}: done {done.items}"
            assert done_log[bi] == (ovf, n_wv, 0), \
                f"batch {bi}: done (overflow, results seen, busy) {done_log[bi]}, expected {(ovf, n_wv, 0)}"
            assert cells.codes == gold.codes, f"batch {bi}: cell codes differ from golden's"
            assert blocked_ram(dut, blk) == blocked, f"batch {bi}: blocked RAM {blocked_ram(dut, blk)} vs {blocked}"
            # between batches: host transfers re-program some cells, their failed results block nothing
            for c in rng.sample(cells_list, 6):
                cells.codes[c] = edge_code(rng, p["block"])
            seq.host = rng.sample(cells_list, 3)
            hits["host"] = hits.get("host", 0) + 3
            while seq.host:
                await RisingEdge(dut.clk)
        dut._log.info(f"{p['batches']} batches, {n_cmd} commands, {n_wv} write-verify commands, "
                      f"{len(blocked)} cells blocked; edge cases {hits}")
        for k in ("d0", "no_room", "saturated", "blocked", "margin_moved", "margin_dropped", "clamp", "d_max"):
            assert hits.get(k, 0) >= 1, f"edge case {k} never hit"


# ------------------------------------------------------------------ pytest side
CONFIGS = [
    # (idle on cmd / rd_rsp, back-pressure on rd_req / wv_cmd / done) per batch, in turn
    dict(block=SMALL, batches=40, phases=[[0, 0], [0.3, 0.4], [0.6, 0.7], [0.1, 0.9]]),
    # other window, margin and widths (6-bit codes: the clamp at 2**7), power-of-two array
    dict(block=dict(n_pe=2, n_rows=4, n_bl=2, code_bits=6, lo=4, hi=50, margin=2), batches=25,
         phases=[[0.2, 0.3], [0, 0], [0.5, 0.5]]),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["small", "tiny"])
def test_pair_programmer(cfg):
    harness.run_block(make_block(cfg["block"]), "pair_programmer", "tb.test_pair_programmer", dict(cfg, seed=2024))
