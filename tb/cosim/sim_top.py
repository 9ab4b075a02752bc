"""System co-simulation: the controller RTL with 8 behavioural PEs on Verilator under cocotb.

The physics stays in golden/: the testbench loads every cell's read current (integer units of
golden.cell.I_Q) into the HDL array models (tb/cosim/hdl/pe_model.v) through a backdoor port, and the
models only add and digitise. Python is never awaited per clock during inference: it feeds one
image (yao2020: 196 words of 4 pixels + a label word), then sleeps until the image buffer is free
again or a result appears.
"""
from __future__ import annotations

from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, Module, Mux, ResetSignal, Signal, Value, unsigned
from amaranth.lib import stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.adc import ADC
from golden.cell import I_Q_UA
from golden.datapath import softmax_params
from rtl.controller import Controller

HDL = Path(__file__).resolve().parent / "hdl"
CLOCK_NS = 10             # the co-simulation top's HDL clock (run(): hdl_clock_ns)
# the controller's activity counters (golden/activity.py RTL_COUNTERS, inference part), on SimTop too
ACT_PORTS = ("slot_reads", "conv_rounds", "bl_pulses", "sl_selections", "diff_subs", "fm_reads", "fm_writes",
             "requant_ops", "pool_ops", "softmax_ops")
PE_MODEL = HDL / "pe_model.v"
IMG_LOADER = HDL / "img_loader.v"
SIM_SOURCES = (PE_MODEL, IMG_LOADER)     # the Verilog every SimTop build needs
CUR_BITS = 18


class SimTop(wiring.Component):
    """Controller + n_pe instances of pe_model, with the models' backdoor cell-write port."""

    def __init__(self, controller: Controller, adc_shift: int, extra_ports: dict | None = None):
        # extra_ports: a subclass's own ports (tb/cosim/insitu_main.py: a tap), driven in its elaborate
        self.ctrl = controller
        self.adc_shift = adc_shift
        sig = controller.signature.members
        super().__init__({
            "image": sig["image"],
            "result": sig["result"],
            "prog": sig["prog"], "prog_res": sig["prog_res"], "prog_req": sig["prog_req"], "prog_rsp": sig["prog_rsp"],
            "train": sig["train"], "eta_m": sig["eta_m"], "eta_sh": sig["eta_sh"], "th_code": sig["th_code"],
            "upd_finish": sig["upd_finish"], "upd_done": sig["upd_done"],
            "vread_req": sig["vread_req"], "vread_rsp": sig["vread_rsp"],
            "cycles": Out(32), "timestamp": Out(32), "slot_reads": Out(32), "conv_rounds": Out(32),
            "lane_idle": Out(32), "status": Out(8),
            "set_pulses": Out(32), "reset_pulses": Out(32), "verify_reads": Out(32), "busy": Out(1),
            "overrun": Out(1),
            **(self._activity_ports(controller) if "bl_pulses" in sig else {}),
            "cfg_we": In(1), "cfg_pe": In(4), "cfg_addr": In(16), "cfg_data": In(CUR_BITS),
            # simulation-only image loader: a whole image (its controller words) in one wide
            # write, fed to the controller's image stream in HDL, so Python wakes once per image
            "img_burst": In(32 * controller.image_words), "img_go": In(1), "img_busy": Out(1),
            **(extra_ports or {}),
        })

    @staticmethod
    def _activity_ports(controller):
        """The controller's activity counters, its image-start pulse and, simulation only, the
        controller cycles in which k PEs start a conversion (k = 1..n_lanes), for the board latency
        (each such cycle is a PHY tick reading k PEs' codes). (The replicated top has none.)"""
        return {**{k: Out(32) for k in ACT_PORTS[2:]}, "img_start": Out(1),
                **{f"req{k + 1}_cycles": Out(32) for k in range(controller.n_lanes)}}

    def elaborate(self, platform):
        m = Module()
        c = self.ctrl
        m.submodules.ctrl = c
        # Every input from Python reaches the controller through a register or a small FIFO.
        # Verilator re-evaluates all logic that depends combinationally on top-level inputs at
        # every eval (its "ico" phase, twice per clock here); Amaranth computes each register's
        # next state combinationally, so without this boundary most of the controller would be
        # recomputed on every eval. The FIFOs add latency, never change a transfer.
        def through_fifo(src, dst, name):
            fifo = SyncFIFO(width=len(Value.cast(src.payload)), depth=2)
            m.submodules[f"fifo_{name}"] = fifo
            m.d.comb += [fifo.w_data.eq(src.payload), fifo.w_en.eq(src.valid), src.ready.eq(fifo.w_rdy),
                         dst.payload.eq(fifo.r_data), dst.valid.eq(fifo.r_rdy), fifo.r_en.eq(dst.ready)]

        # image words: from the burst loader (hdl/img_loader.v) while it holds an image, else
        # from the image port
        nw = c.image_words
        word = Signal(32)
        loader_ready = Signal()
        m.submodules.img_loader = Instance(
            "img_loader", p_NW=nw, p_IW=max(1, (nw - 1).bit_length()),
            i_clk=ClockSignal(), i_rst=ResetSignal(), i_burst=self.img_burst, i_go_in=self.img_go,
            o_busy=self.img_busy, o_payload=word, i_ready=loader_ready)
        port_img = stream.Signature(unsigned(32)).create()
        through_fifo(self.image, port_img, "image")
        with m.If(self.img_busy):
            m.d.comb += [c.image.valid.eq(1), c.image.payload.eq(word), loader_ready.eq(c.image.ready)]
        with m.Else():
            wiring.connect(m, port_img, c.image)
        through_fifo(c.result, self.result, "result")
        through_fifo(self.prog, c.prog, "prog")
        through_fifo(c.prog_res, self.prog_res, "prog_res")
        through_fifo(c.prog_req, self.prog_req, "prog_req")
        through_fifo(self.prog_rsp, c.prog_rsp, "prog_rsp")
        through_fifo(self.upd_finish, c.upd_finish, "upd_finish")
        through_fifo(c.upd_done, self.upd_done, "upd_done")
        through_fifo(c.vread_req, self.vread_req, "vread_req")
        through_fifo(self.vread_rsp, c.vread_rsp, "vread_rsp")
        m.d.sync += [c.train.eq(self.train), c.eta_m.eq(self.eta_m), c.eta_sh.eq(self.eta_sh),
                     c.th_code.eq(self.th_code)]
        m.d.comb += [self.cycles.eq(c.cycles), self.timestamp.eq(c.timestamp),
                     self.slot_reads.eq(c.slot_reads),
                     self.conv_rounds.eq(c.conv_rounds), self.lane_idle.eq(c.lane_idle), self.status.eq(c.status),
                     self.overrun.eq(c.overrun), self.set_pulses.eq(c.set_pulses),
                     self.reset_pulses.eq(c.reset_pulses), self.verify_reads.eq(c.verify_reads), self.busy.eq(c.busy)]
        if "img_start" in self.signature.members:
            self._activity(m, c)
        cfg_we = Signal(c.n_pe)
        cfg_addr, cfg_data = Signal.like(self.cfg_addr), Signal.like(self.cfg_data)
        m.d.sync += [cfg_we.eq(Mux(self.cfg_we, 1 << self.cfg_pe, 0)), cfg_addr.eq(self.cfg_addr),
                     cfg_data.eq(self.cfg_data)]
        for p in range(c.n_pe):
            pe = c.pe[p]
            m.submodules[f"pe{p}"] = Instance(
                "pe_model",
                p_ROWS=c.n_rows, p_BLS=c.n_bl, p_NADC=c.n_adc, p_CODE_BITS=c.code_bits, p_CUR_BITS=CUR_BITS,
                i_clk=ClockSignal(), i_bl=pe.bl, i_sh_sample=pe.sh_sample, i_sh_bank=pe.sh_bank,
                i_adc_start=pe.adc_start, i_adc_bank=pe.adc_bank, i_adc_sel=pe.adc_sel,
                i_adc_shift=self.adc_shift, o_adc_valid=pe.adc_valid, o_adc_codes=pe.adc_codes,
                i_cfg_we=cfg_we[p], i_cfg_addr=cfg_addr, i_cfg_data=cfg_data,
                **self._transposed_pins(m, p),
            )
        return m

    def _transposed_pins(self, m, p) -> dict:
        """PE p's transposed-read pins (not in the controller: tied off; tb/cosim/insitu_top.py
        drives them from rtl/insitu_path.py)."""
        return dict(i_sl_drive=0, i_bl_sample=0, i_bl_shift=0, o_bl_valid=Signal(name=f"pe{p}_bl_valid"),
                    o_bl_codes=Signal(self.ctrl.n_bl * 8, name=f"pe{p}_bl_codes"))

    def _activity(self, m, c):
        m.d.comb += [getattr(self, k).eq(getattr(c, k)) for k in ACT_PORTS[2:] + ("img_start",)]
        n_req = Signal(range(c.n_pe + 1))
        m.d.comb += n_req.eq(sum(c.pe[p].adc_start for p in range(c.n_pe)))
        for k in range(c.n_lanes):
            with m.If(n_req == k + 1):
                cnt = getattr(self, f"req{k + 1}_cycles")
                m.d.sync += cnt.eq(cnt + 1)


def adc_shift_for(adc) -> int:
    """The array model digitises with LSB = 2**shift I_Q: the golden ADC's LSB must be one of those."""
    ratio = adc.lsb_ua / I_Q_UA
    shift = round(ratio).bit_length() - 1
    if abs(ratio - (1 << shift)) > 1e-9:
        raise ValueError(f"ADC LSB {adc.lsb_ua} uA is not a power-of-two multiple of I_Q = {I_Q_UA} uA")
    return shift


# ------------------------------------------------------------------ build and run (tests, `mcnn sim`, `mcnn bench`)

def build_controller(w, network="yao2020"):
    """The controller the generator makes for a network (golden/networks.py) and its weights."""
    from golden.networks import network as lookup
    net = lookup(network)
    return Controller(w.q.requant, softmax_params(w.q.logit_scale), net.layers, net.mapping(),
                      input_shape=net.input_shape)


def sim_top(w, network="yao2020"):
    return SimTop(build_controller(w, network), adc_shift_for(ADC()))


def session_params(weights, data, n, report, **kw) -> dict:
    """Parameters of a tb/cosim/sim_main.py session (make sim, make bench, the tests)."""
    return {"weights": str(Path(weights).resolve()), "data": str(Path(data).resolve()), "n": n,
            "report": str(Path(report).resolve()), **kw}


# images of the PGO training session: enough to reach the steady inference loop (the model's hot path)
PGO_TRAIN_IMAGES = 20


def run(w, params, log_to_terminal=False, waves=False, pgo=False):
    """One sim_main session. pgo: on a GCC profile-guided build (harness.run_block(pgo_params=...),
    trained once per design on PGO_TRAIN_IMAGES ideal images of the same data): ~20 % faster, and
    its first use costs a second compile and the training run, so `mcnn sim` / `mcnn bench` ask for
    it and the tests do not."""
    import tempfile

    from tb import harness
    with tempfile.TemporaryDirectory() as td:
        net = params.get("network", "yao2020")
        train = session_params(params["weights"], params["data"], PGO_TRAIN_IMAGES, Path(td) / "train.json",
                               progress=False, device="ideal", network=net) if pgo else None
        return harness.run_block(sim_top(w, net), "mcnn_sim", "tb.cosim.sim_main", params, extra_sources=SIM_SOURCES,
                                 ports_only=True, hdl_clock_ns=CLOCK_NS, log_to_terminal=log_to_terminal, waves=waves,
                                 pgo_params=train)


# ------------------------------------------------------------------ cocotb side

async def load_cells(dut, i_units, clk):
    """Write every cell's read current (I_Q units), PE by PE, through the backdoor port."""
    from cocotb.triggers import RisingEdge
    n_pe, rows, bls = i_units.shape
    if i_units.max() >= 1 << CUR_BITS or i_units.min() < 0:
        raise ValueError(f"cell currents must fit {CUR_BITS} unsigned bits of I_Q")
    dut.cfg_we.value = 1
    for p in range(n_pe):
        if n_pe > 1:
            dut.cfg_pe.value = p
        flat = i_units[p].reshape(-1)
        for a in range(rows * bls):
            dut.cfg_addr.value = a
            dut.cfg_data.value = int(flat[a])
            await RisingEdge(clk)
    dut.cfg_we.value = 0


def image_words(img, label=0):
    """Pixels, 4 per 32-bit word (first pixel in the low byte), then one word with the label."""
    px = [int(v) for v in img.reshape(-1)]
    px += [0] * (-len(px) % 4)
    return [px[i] | px[i + 1] << 8 | px[i + 2] << 16 | px[i + 3] << 24 for i in range(0, len(px), 4)] + [int(label)]


async def feed_images(dut, images, clk, labels=None):
    """Hand each image to SimTop's burst loader in one write (Python wakes 3 times per image)."""
    from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
    for n, img in enumerate(images):
        words = image_words(img, 0 if labels is None else labels[n])
        await ReadOnly()
        if dut.img_busy.value:
            await FallingEdge(dut.img_busy)    # the loader is free again; go is written mid-cycle: the
            await FallingEdge(clk)             # falling busy and the rising clock share a time step
        else:
            await RisingEdge(clk)              # leave the read-only phase
        dut.img_burst.value = sum(w << (32 * i) for i, w in enumerate(words))
        dut.img_go.value = 1
        await RisingEdge(clk)
        dut.img_go.value = 0
        await RisingEdge(dut.img_busy)         # taken: busy rises the cycle after go


async def feed_image_words(dut, images, clk, labels=None):
    """The same through the controller's image stream port, one word per wake-up."""
    from cocotb.triggers import ReadOnly, RisingEdge
    for n, img in enumerate(images):
        for wv in image_words(img, 0 if labels is None else labels[n]):
            dut.image__payload.value = wv
            dut.image__valid.value = 1
            while True:
                await ReadOnly()
                if dut.image__ready.value:
                    await RisingEdge(clk)
                    break
                await RisingEdge(dut.image__ready)  # sleep until the buffer frees: no per-cycle wake-ups
        dut.image__valid.value = 0
        await RisingEdge(clk)


async def collect_results(dut, n, layout, clk, on_result=None):
    from cocotb.triggers import ReadOnly, RisingEdge

    from tb.harness import unpack
    out = []
    dut.result__ready.value = 1
    while len(out) < n:
        await RisingEdge(dut.result__valid)
        await ReadOnly()
        raw = int(dut.result__payload.value)
        r = unpack(layout, raw)
        for name in ("logits", "p", "delta"):
            f = layout[name]
            k, es = f.shape.length, f.shape.elem_shape
            w = es.width
            vals = [(raw >> (f.offset + i * w)) & ((1 << w) - 1) for i in range(k)]
            r[name] = [v - (1 << w) if es.signed and v >> (w - 1) else v for v in vals]
        r["cycles"] = int(dut.cycles.value)
        r["timestamp"] = int(dut.timestamp.value)
        sm = getattr(dut, "softmax_ops", None)     # (tops without activity counters: none)
        if sm is not None:
            r["softmax_ops"] = int(sm.value)
        out.append(r)
        if on_result:
            on_result(r)
    return out


def same_result(r, g) -> bool:
    """One RTL result (collect_results) equals the golden (logits, class, p, delta) of its image."""
    return (r["logits"] == g[0].tolist() and r["cls"] == int(g[1]) and r["p"] == g[2].tolist()
            and r["delta"] == g[3].tolist())


async def infer(dut, layout, x, y, desc=None, progress=False, activity=False):
    """Feed images x (labels y) and collect their results -> (results, wall seconds).
    activity=True: each result also gets `activity`, its image's counter differences
    (ACT_PORTS, golden.activity.from_counters turns them into the keys), see image_activity."""
    import time

    import cocotb
    from cocotb.triggers import RisingEdge
    from tqdm import tqdm
    bar = tqdm(total=len(x), desc=desc, unit="img", disable=not progress)
    t0 = time.perf_counter()
    snaps: list = []
    if activity:
        cocotb.start_soon(watch_starts(dut, snaps, len(x)))
    cocotb.start_soon(feed_images(dut, x, dut.clk, labels=y))
    res = await collect_results(dut, len(x), layout, dut.clk, on_result=lambda r: bar.update(1))
    await RisingEdge(dut.clk)  # leave the read-only phase
    bar.close()
    if activity:
        image_activity(res, snaps, read_counters(dut))
    return res, time.perf_counter() - t0


def read_counters(dut, names=ACT_PORTS) -> dict:
    return {k: int(getattr(dut, k).value) for k in names}


async def watch_starts(dut, snaps, n):
    """The activity counters at each image's start (the controller's `img_start` pulse)."""
    from cocotb.triggers import ReadOnly, RisingEdge
    for _ in range(n):
        await RisingEdge(dut.img_start)
        await ReadOnly()
        snaps.append(read_counters(dut))


def image_activity(res, snaps, final):
    """Per image, the counters' growth from its start to the next image's start (the last: to
    `final`, read after its result); the softmax runs after the next image has started, so its
    count is taken from the results (sampled with each). Sets res[i]["activity"]."""
    from golden.activity import counter_diff
    if len(snaps) != len(res):
        raise RuntimeError(f"{len(snaps)} image starts seen for {len(res)} results")
    ends = snaps[1:] + [final]
    prev_sm = snaps[0]["softmax_ops"] if snaps else 0
    for r, a, b in zip(res, snaps, ends):
        d = counter_diff({k: b[k] for k in ACT_PORTS}, a)
        d["softmax_ops"] = (r["softmax_ops"] - prev_sm) & 0xFFFFFFFF
        prev_sm = r["softmax_ops"]
        r["activity"] = d


async def reported_session(body, dut, params, report):
    """Run a cocotb session body; the JSON report (with the error, if any) is written either way."""
    import json
    try:
        await body(dut, params, report)
    except Exception as e:
        report["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        with open(params["report"], "w") as f:
            json.dump(report, f, indent=2)


async def serve_programming(dut, clk, backend, cells=(), until_done=False, on_result=None, max_idle=300_000):
    """Programming through the RTL: the write-verify sequencer (and, in training, the pair
    programmer) issue verify reads and SET/RESET pulses; `backend` (the golden device physics)
    answers them cycle by cycle.

    cells: host commands [(pe, row, bl, target_code)] sent on `prog` (the weight transfer).
    until_done: also wait for the end of a training batch's programming (`upd_done`).
    backend: .begin(pe, row, bl) when a write-verify cell starts, .read() -> verify code,
    .pulse(direction), .end(ok, pulses) -> the cell's new read current in I_Q units (written into
    the HDL array model so inference sees it), .vread(pe, row, bl) -> verify code of a pair read.
    Python follows programming cycle by cycle (a few hundred thousand cycles for a board);
    inference never does.
    """
    from cocotb.triggers import ReadOnly, RisingEdge

    from tb.harness import pack, unpack
    L = backend.layouts
    n = len(cells)
    results, sent, rsp_queue, vrsp_queue = [], 0, [], []
    cfg_write, current, done = None, None, not until_done
    dut.prog_req__ready.value = 1
    dut.prog_res__ready.value = 1
    dut.vread_req__ready.value = 1
    dut.upd_done__ready.value = 1
    idle = 0
    while len(results) < n or not done or cfg_write is not None:
        idle += 1
        if idle > max_idle:
            raise TimeoutError(f"programming stalled for {max_idle} cycles: {len(results)}/{n} host cells done, "
                               f"batch done {done}, prog_req {dut.prog_req__valid.value}, vread_req "
                               f"{dut.vread_req__valid.value}, prog ready {dut.prog__ready.value}, "
                               f"status {int(dut.status.value):08b}")
        if sent < n:
            pe, row, bl, tgt = cells[sent]
            dut.prog__payload.value = pack(L["cmd"], pe=pe, row=row, bl=bl, target=tgt)
        dut.prog__valid.value = int(sent < n)
        if rsp_queue:
            dut.prog_rsp__payload.value = pack(L["rsp"], code=rsp_queue[0])
        dut.prog_rsp__valid.value = int(bool(rsp_queue))
        if vrsp_queue:
            dut.vread_rsp__payload.value = vrsp_queue[0]
        dut.vread_rsp__valid.value = int(bool(vrsp_queue))
        if cfg_write is not None:
            dut.cfg_we.value, dut.cfg_pe.value = 1, cfg_write[0]
            dut.cfg_addr.value, dut.cfg_data.value = cfg_write[1], cfg_write[2]
            cfg_write = None
        else:
            dut.cfg_we.value = 0
        await ReadOnly()
        if sent < n and dut.prog__ready.value:
            sent += 1
        if rsp_queue and dut.prog_rsp__ready.value:
            rsp_queue.pop(0)
        if vrsp_queue and dut.vread_rsp__ready.value:
            vrsp_queue.pop(0)
        if until_done and dut.upd_done__valid.value:
            done = True
        if dut.prog_res__valid.value or dut.vread_req__valid.value or dut.prog_req__valid.value:
            idle = 0
        if dut.prog_res__valid.value:
            r = unpack(L["res"], int(dut.prog_res__payload.value))
            units = backend.end(bool(r["ok"]), r["pulses"])
            cfg_write = (r["pe"], r["row"] * 16 + r["bl"], units)
            current = None
            results.append(r)
            if on_result:
                on_result(r)
        if dut.vread_req__valid.value:
            q = unpack(L["vread"], int(dut.vread_req__payload.value))
            vrsp_queue.append(backend.vread(q["pe"], q["row"], q["bl"]))
        if dut.prog_req__valid.value:
            q = unpack(L["req"], int(dut.prog_req__payload.value))
            addr = (q["pe"], q["row"], q["bl"])
            if current != addr:
                backend.begin(*addr)
                current = addr
            if q["op"] == 2:   # READ
                rsp_queue.append(backend.read())
            else:              # SET = 0, RESET = 1 (golden.write_verify.Pulse)
                backend.pulse(q["op"])
        await RisingEdge(clk)
    dut.cfg_we.value = 0
    dut.prog__valid.value = 0
    dut.prog_rsp__valid.value = 0
    dut.vread_rsp__valid.value = 0
    return results


async def finish_batch(dut, backend):
    """End a training batch: the update engine's finish marker for one clock, then serve the
    programming it causes until the pair programmer is done. -> the write-verify results."""
    from cocotb.triggers import RisingEdge
    dut.train.value = 0
    dut.upd_finish__valid.value = 1
    dut.upd_finish__payload.value = 0
    await RisingEdge(dut.clk)
    dut.upd_finish__valid.value = 0
    return await serve_programming(dut, dut.clk, backend, until_done=True)


class CrossbarBackend:
    """Serves the RTL's programming requests from a golden.crossbar.Crossbar (the physics)."""

    def __init__(self, xb, ctrl):
        self.xb = xb
        self.layouts = {"cmd": ctrl.wv.cmd_layout, "rsp": ctrl.wv.rsp_layout, "res": ctrl.wv.res_layout,
                        "req": ctrl.wv.req_layout, "vread": ctrl.pp.rd_layout}
        self.session = None

    def begin(self, pe, row, bl):
        self.session = self.xb.cell_session(pe, row, bl)

    def read(self):
        return self.session.read()

    def pulse(self, op):
        from golden.write_verify import Pulse
        self.session.pulse(Pulse(op))

    def end(self, ok, pulses):
        from golden.cell import V_READ, current_units
        s = self.session
        s.end(ok, pulses)
        self.session = None
        return int(current_units(self.xb.g[s.idx] * V_READ))

    def vread(self, pe, row, bl):
        return self.xb.verify_read(pe, row, bl)
