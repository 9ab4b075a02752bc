"""In-situ training of li2018 in fabric, co-simulated against golden InsituTrainer (issue 15):
tb/cosim/insitu_top.py (the li2018 controller + rtl/insitu_path.py InsituPath on 8 behavioural
PEs) trains a board over `batches` batches, then infers `n_test` test images on it.

Two boards: A is golden's (InsituTrainer: forward, backward, updates, commands, PairProgrammer
"open"); B, a copy of the fresh A, is the RTL's, programmed only by InsituPath's pulses through
tb/cosim/open_board.py Board (golden physics). The PEs hold B's cell currents (backdoor load before
every batch). Per batch: the images one at a time (`train` on; the next image once the path has
taken the previous one, so the controller's SL-side reads and InsituPath's transposed reads never
overlap), the result stream and the feeder's deltas and h (tapped) against golden, then a FINISH on
`fin`: InsituPath's commands (tap) against update.commands of layers H then O, its hidden delta
vectors (tap) against golden's, its verify reads, pulse count and, once programmed, every
conductance of B against A. Then, `train` off, n_test images back to back on B: every logit, class,
p, delta against golden on A, accuracy. Images: with `data`, MNIST (the li2018 transform; training
batches seeded permutations of the training split, the first n_test test images), else random
(insitu_main.random_images). The first mismatch ends the session (the report says where).

Regime `mode` (p['mode'], default "open"): the top's InsituPath mode and golden's InsituConfig mode
(PairProgrammer "open" / "closed"). Closed: B is served by open_board.py VerifyBoard (each cell's
write-verify READs and pulses one golden CellSession); per batch besides the above every
write-verify request (pulse or READ, cell, in order) equals golden's (traced Crossbar.cell_session),
every result on the wv_res tap is its board session's (cell, pulses, final code), the failed ones
are golden's failures (the cells blocked for good); pulse limit p['max_pulses'] (default the preset's)
on the RTL port and golden Crossbar.max_pulses.
"""
from __future__ import annotations

import random
import time
from functools import partial

import cocotb
import numpy as np

from tb import harness
from tb.cosim import sim_top
from tb.cosim.insitu_main import batch_report, compare_forward, feed_item, random_images, trainer
from tb.cosim.open_board import Board, VerifyBoard, trace_sessions

POLL = 4096         # _until: cycles between checks when none of its signals changes


def expected_commands(t, dis):
    """The path's command stream for the updates dis (InsituTrainer.updates): per trained layer,
    lowest first, its commands and its end marker (dicts of the cmd layout's fields). li2018
    (InsituPath): H's, then O's; elm-board (SignPath): O's (H frozen, dis[0] None)."""
    from golden.update import commands
    out = []
    for L, d in zip(t.layers, dis):
        if d is None:
            continue
        out += [dict(pe=c.pe, row_pos=c.row_pos, bl=c.bl, m=c.m, n=c.n, d_code=c.d_code, end=0, overflow=0)
                for c in commands(d, t.mapping, L.name)]
        out.append(dict(pe=0, row_pos=0, bl=0, m=0, n=0, d_code=0, end=1, overflow=0))
    return out


def images(p, net):
    """-> (training batches [(x (B, 8, 8, 1), y)], test x, test y): MNIST with p['data'], else random."""
    b, n, nt = p["batch"], p["batches"], p["n_test"]
    if not p.get("data"):
        rng = np.random.default_rng(p["seed"])
        tr = [random_images(rng, b) for _ in range(n)]
        return tr, *random_images(rng, nt)
    from golden.hybrid import batch_order
    from golden.idx import load_dataset
    ds = load_dataset(p["data"], image_shape=net.source_shape, n_classes=net.n_classes)
    shape = (-1,) + tuple(net.input_shape)
    xtr = np.asarray(net.prepare(ds.train_images[:ds.split[0]])).reshape(shape)
    order = batch_order(ds.split[0], b, n, seed=p["seed"])
    xt = np.asarray(net.prepare(ds.test_images[:nt])).reshape(shape)
    return [(xtr[ix], ds.train_labels[ix]) for ix in order], xt, ds.test_labels[:nt]


async def _until(dut, cond, what, on, limit=2_000_000):
    """Until cond() holds, checked whenever one of the signals `on` (every signal cond reads)
    changes value, and every POLL cycles as a safety net: no Python per cycle."""
    from cocotb.triggers import First, Timer, ValueChange
    c0 = _cycle()
    while not cond():
        if _cycle() - c0 > limit:
            raise TimeoutError(f"{what}: not after {limit} cycles")
        await First(*(ValueChange(s) for s in on), Timer(POLL * sim_top.CLOCK_NS, "ns"))


def _cycle():
    from cocotb.utils import get_sim_time
    return int(get_sim_time("ns")) // sim_top.CLOCK_NS


class Loop:
    """One session's state: golden trainer t (board A), the RTL's board B, the taps. The path is the
    top's (tb/cosim/insitu_top.py loop_top): InsituPath (li2018), or SignPath for a sign-WH output
    layer (elm-board: `sign`; images back to back, as no transposed read shares the PEs)."""

    def __init__(self, dut, p):
        from tb.cosim.insitu_top import loop_path
        self.dut, self.p = dut, p
        self.t = trainer(p)
        self.mode = p.get("mode", "open")
        self.sign = self.t.rules[-1] == "sign"
        self.trained = [L.name for L, r in zip(self.t.layers, self.t.rules) if r != "frozen"]
        self.path = loop_path(self.t, p.get("device", "li2018"), self.mode)   # (its layouts: the top's own copy)
        stalls = dict(req_stall=0.4, rd_stall=0.3, rsp_idle=0.3) if p.get("stalls") else \
            dict(req_stall=0.0, rd_stall=0.0, rsp_idle=0.0)
        rng = random.Random(p["seed"])
        if self.sign:                   # SignPath: pulses only, no verify reads
            self.board = Board(dut, self.path, self.t.xb.copy(), rng, **stalls)
        elif self.mode == "closed":
            self.results, self.gops = [], []       # the wv_res tap; golden's write-verify requests
            self.board = VerifyBoard(dut, self.path.req_layout, self.path.prog.rd_layout, self.t.xb.copy(), rng,
                                     self.results, **stalls)
            self.max_pulses = p.get("max_pulses") or self.t.xb.max_pulses
            self.t.xb.max_pulses = self.max_pulses
            trace_sessions(self.t.xb, self.gops)
            self.o0 = self.r0 = self.f0 = self.hits = 0
        else:
            self.board = Board(dut, self.path.prog, self.t.xb.copy(), rng, **stalls)
        self.n_pe = 1 + max(g.pe for gs in self.t.mapping.groups.values() for g in gs)
        self.feed, self.dh, self.cmds = [], [], []
        self.n_img = self.n_cmd = 0

    async def start(self):
        from tb.cosim.insitu_main import insitu_controller
        d, t = self.dut, self.t
        self.ctrl = insitu_controller(t)
        await harness.start_clock_and_reset(d, start_clock=False)
        d.pulse_cycles.value = self.p.get("pulse_cycles", 2)
        d.fin__valid.value = 0
        if not self.sign:
            (d.mult_h.value, d.shift_h.value), (d.mult_o.value, d.shift_o.value) = t.upd
            d.ip_th_code.value = t.th
            cocotb.start_soon(harness.tap(d, "dh", self.dh))
        if self.mode == "closed":
            d.max_pulses.value, d.rsp__valid.value = self.max_pulses, 0
            cocotb.start_soon(harness.tap(d, "wv_res", self.results, partial(harness.unpack, self.path.wv.res_layout)))
        cocotb.start_soon(harness.tap(d, "feed", self.feed, feed_item(self.ctrl.upd.in_layout)))
        cocotb.start_soon(harness.tap(d, "cmd", self.cmds))

    async def train_batch(self, b, x, y) -> dict:
        """One batch through the loop in fabric, checked against golden (module docstring)."""
        d, t = self.dut, self.t
        xf = x.reshape(len(x), -1)
        acts, logits = t.forward(xf)                      # golden on A, before its programming
        deltas = t.backward(acts, logits, y)
        exp = expected_commands(t, t.updates(acts, deltas))
        await sim_top.load_cells(d, self.board.xb.i_units()[:self.n_pe], d.clk)   # B's currents
        c0, f0, fed0 = _cycle(), len(self.feed), int(d.fed.value)
        d.train.value = 1
        res = await self._images(x, y, fed0)
        d.train.value = 0
        e = {"batch": b, **batch_report(t, res, self.feed[f0:], x, y)}
        if e["mismatched_images"] or e["mismatched_feed"]:
            raise AssertionError(f"batch {b}: forward / feed differ from golden: {e}")
        c1 = _cycle()
        e.update(await self._program(b, exp))
        self._check_taps(b, deltas, exp)
        e.update(self._program_golden(b, exp))
        e.update(cycles_forward=c1 - c0, cycles_programming=_cycle() - c1, train_error=e.pop("error"))
        self.n_img, self.n_cmd = self.n_img + len(x), self.n_cmd + len(exp)
        return e

    async def _images(self, x, y, fed0):
        """The batch through the controller (train on) until the path has taken its last feed:
        SignPath back to back; InsituPath one image at a time (its transposed reads and the
        controller's reads apart)."""
        d, fed = self.dut, lambda n: lambda: int(self.dut.fed.value) == n and int(self.dut.bw_idle.value)
        if self.sign:
            res, _ = await sim_top.infer(d, self.ctrl.result_layout, x, y)
            await _until(d, fed(fed0 + len(x)), "the batch's feed", (d.fed, d.bw_idle))
            return res
        res = []
        for i in range(len(x)):
            r, _ = await sim_top.infer(d, self.ctrl.result_layout, x[i:i + 1], y[i:i + 1])
            res += r
            await _until(d, fed(fed0 + i + 1), f"image {i}'s feed", (d.fed, d.bw_idle))
        return res

    async def _program(self, b, exp) -> dict:
        """FINISH: the path programs B (Board serves its ports) until its `done` (InsituPath: two)."""
        d, bd = self.dut, self.board
        tasks = [cocotb.start_soon(bd.pulses_port())] + ([] if self.sign else [cocotb.start_soon(bd.reads_port())])
        p0, r0 = bd.pulses, len(bd.reads)
        d.fin__valid.value = 1
        await _until(d, lambda: int(d.fin__ready.value), "fin taken", (d.fin__ready,))
        from cocotb.triggers import RisingEdge
        await RisingEdge(d.clk)
        d.fin__valid.value = 0
        await _until(d, lambda: int(d.done_count.value) >= len(self.trained) * (b + 1), f"batch {b}'s programming",
                     (d.done_count,), limit=200 * len(exp) + 100_000)
        for k in tasks:
            k.cancel()
        d.req__ready.value = 0
        if not self.sign:
            d.rd_req__ready.value = d.rd_rsp__valid.value = 0
        if self.mode == "closed":
            d.rsp__valid.value = 0
        bd.flush()
        self.reads = bd.reads[r0:]
        ends = [k for k, c in enumerate(exp) if c["end"]]
        n = {f"commands_{name.lower()}": e - s for name, s, e in zip(self.trained, [0] + [k + 1 for k in ends], ends)}
        return {**n, "pulses": bd.pulses - p0}

    def _check_taps(self, b, deltas, exp):
        """The hidden delta vectors and the command stream against golden."""
        path = self.path
        for i in range(0 if self.sign else len(deltas[0])):
            r = path.he.out_layout.from_bits(self.dh[self.n_img + i])
            got = [int(r.d[j]) for j in range(path.n_hid)]
            if got != [int(v) for v in deltas[0][i]]:
                raise AssertionError(f"batch {b} image {i}: hidden delta {got}, golden {deltas[0][i].tolist()}")
        layout = path.cmd_layout if self.sign else path.out_layout
        got = [harness.unpack(layout, v) for v in self.cmds[self.n_cmd:self.n_cmd + len(exp)]]
        if len(got) != len(exp):
            raise AssertionError(f"batch {b}: {len(got)} commands, golden {len(exp)}")
        for k, (g, e) in enumerate(zip(got, exp)):
            if {f: int(g[f]) for f in e} != e:
                raise AssertionError(f"batch {b} command {k}: {g}, golden {e}")

    def _program_golden(self, b, exp):
        """Golden programs A (InsituTrainer.step's order); B's reads, pulses, conductances must match."""
        from golden.update import ProgramCommand
        t, bd = self.t, self.board
        p0, greads = t.pulses, []
        for c in exp:
            if c["end"]:
                continue
            cmd = ProgramCommand(c["pe"], c["row_pos"], c["bl"], c["m"], c["n"], c["d_code"])
            if self.sign:                       # one pulse per device (golden/pair_pulser.py), no reads
                t.pulser.apply(cmd)
                continue
            if self.mode == "closed":           # a command on a cell blocked before it
                bl = t.prog.blocked
                self.hits += (c["pe"], c["row_pos"], c["bl"]) in bl or (c["pe"], c["row_pos"] + 1, c["bl"]) in bl
            t.prog.apply(cmd, t.it)
            greads += [(c["pe"], c["row_pos"], c["bl"]), (c["pe"], c["row_pos"] + 1, c["bl"])]
        t.it += 1
        if self.reads != greads:
            raise AssertionError(f"batch {b}: verify reads differ from golden's")
        if bd.pulses != int(self.dut.pulses.value) or bd.pulses != t.pulses:
            raise AssertionError(f"batch {b}: pulses RTL {bd.pulses} (port {int(self.dut.pulses.value)}), "
                                 f"golden {t.pulses} (batch: {t.pulses - p0})")
        closed = self._check_closed(b) if self.mode == "closed" else {}
        if not np.array_equal(t.xb.g, bd.xb.g):
            raise AssertionError(f"batch {b}: conductances differ at {np.argwhere(t.xb.g != bd.xb.g)[:5].tolist()}")
        return closed

    def _check_closed(self, b) -> dict:
        """Closed mode: every write-verify request and result of the batch, the blocked cells."""
        t, res, bd = self.t, self.results, self.board
        if bd.ops[self.o0:] != self.gops[self.o0:]:
            k = next((i for i, (g, e) in enumerate(zip(bd.ops[self.o0:], self.gops[self.o0:])) if g != e),
                     min(len(bd.ops), len(self.gops)) - self.o0)
            raise AssertionError(f"batch {b}: write-verify request {k} differs from golden's "
                                 f"({len(bd.ops) - self.o0} RTL, {len(self.gops) - self.o0} golden)")
        if not len(res) == len(t.prog.programmed) == bd.ended:
            raise AssertionError(f"batch {b}: {len(res)} write-verify results (board sessions {bd.ended}), "
                                 f"golden {len(t.prog.programmed)} cells programmed")
        fails = [((r["pe"], r["row"], r["bl"]), r["final_code"], r["pulses"]) for r in res[self.r0:] if not r["ok"]]
        want = [((f["pe"], f["row"], f["bl"]), f["final_code"], f["pulses"]) for f in t.prog.failures[self.f0:]]
        if fails != want:
            raise AssertionError(f"batch {b}: failed (blocked) cells {fails[:5]}, golden {want[:5]}")
        out = {"wv_requests": len(bd.ops) - self.o0, "cells_written": len(res) - self.r0, "blocked": len(want)}
        self.o0, self.r0, self.f0 = len(self.gops), len(res), len(t.prog.failures)
        return out

    async def test(self, x, y) -> dict:
        """`train` off: x back to back on B's currents, against golden on A."""
        d, t = self.dut, self.t
        await sim_top.load_cells(d, self.board.xb.i_units()[:self.n_pe], d.clk)
        c0 = _cycle()
        res, secs = await sim_top.infer(d, self.ctrl.result_layout, x, y, desc="test", progress=self.p.get("progress"))
        bad, _, _ = compare_forward(t, res, x, y)
        cls = np.array([r["cls"] for r in res])
        golden = t.error(x.reshape(len(x), -1), y)
        return {"images": len(x), "bitexact_images": len(x) - len(bad), "mismatched": bad[:10],
                "accuracy_rtl": float((cls == y).mean() * 100), "accuracy_golden": 100.0 - golden,
                "cycles": _cycle() - c0, "cycles_per_image": (_cycle() - c0) / max(1, len(x)),
                "seconds": round(secs, 2)}


@cocotb.test()
async def session(dut):
    p = harness.params()
    report = {"network": p.get("network", "li2018"), "device": p.get("device", "li2018"), "mode": p.get("mode", "open"),
              "seed": p["seed"], "batches": p["batches"],
              "batch": p["batch"], "n_test": p["n_test"], "data": p.get("data"), "trace": []}
    await sim_top.reported_session(_session, dut, p, report)


async def _session(dut, p, report):
    t0 = time.perf_counter()
    lp = Loop(dut, p)
    if not lp.sign:                 # (sign-WH has no step and no threshold)
        report.update(eta=lp.t.cfg.eta, th_code=lp.t.th)
    if lp.mode == "closed":
        report["max_pulses"] = lp.max_pulses
    train, xt, yt = images(p, lp.t.net)
    await lp.start()
    for b, (x, y) in enumerate(train):
        report["trace"].append(await lp.train_batch(b, x, y))
        if p.get("progress"):
            e = report["trace"][-1]
            wv = f", {e['wv_requests']} write-verify requests, {e['blocked']} cells blocked" if "blocked" in e else ""
            cmds = " + ".join(str(e[f"commands_{n.lower()}"]) for n in lp.trained)
            dut._log.info(f"batch {b}: {cmds} commands, {e['pulses']} pulses{wv}, all equal golden")
    tr = report["trace"]
    ts = time.perf_counter()
    report["train"] = {"images": lp.n_img, "bitexact_images": lp.n_img,
                       "commands": lp.n_cmd - len(lp.trained) * len(tr),
                       "pulses": sum(e["pulses"] for e in tr), "conductances_equal_golden": True,
                       "cycles_per_image": sum(e["cycles_forward"] + e["cycles_programming"] for e in tr) / lp.n_img,
                       "cycles_per_image_forward": sum(e["cycles_forward"] for e in tr) / lp.n_img,
                       "seconds": round(ts - t0, 2)}
    if lp.mode == "closed":
        report["train"].update(blocked=len(lp.t.prog.failures), commands_on_blocked=lp.hits,
                               wv_requests=sum(e["wv_requests"] for e in tr),
                               cells_written=sum(e["cells_written"] for e in tr))
    report["test"] = await lp.test(xt, yt) if len(xt) else {"images": 0}
    report["mismatched_images"] = report["test"]["images"] - report["test"].get("bitexact_images", 0)
    report["overrun"] = int(dut.overrun.value)
    report["err"] = int(dut.err.value)
    report["wall_seconds"] = round(time.perf_counter() - t0, 2)
    if report["mismatched_images"] or report["err"]:
        raise AssertionError(f"test images differ from golden: {report['test'].get('mismatched')}, err {report['err']}")


def run(params, log_to_terminal=False):
    """One session (params: seed, batches, batch, n_test, report; optional network (li2018, elm-board),
    data, device, mode, eta, th, max_pulses, stalls, progress)."""
    from pathlib import Path

    from tb.cosim.insitu_top import loop_top
    if params.get("data"):
        params = {**params, "data": str(Path(params["data"]).resolve())}
    top = loop_top(trainer(params), params.get("device", "li2018"), params.get("mode", "open"))
    return harness.run_block(top, "mcnn_insitu_loop",
                             "tb.cosim.insitu_loop_main", params, extra_sources=sim_top.SIM_SOURCES,
                             ports_only=True, hdl_clock_ns=sim_top.CLOCK_NS, log_to_terminal=log_to_terminal)
