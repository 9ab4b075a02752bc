"""rtl/host.py HostBridge in the Amaranth simulator against a small Python stand-in controller:
the STREAM command set (docs/link.md) word by word -- answers, trailers, error statuses, padding
of a short image, the verify-read arbitration -- and the generated host constants.

The stand-in controller is protocol only (its 'result' of an image is the image's word sum, its
write-verify result echoes the cell): the numbers of the real controller are checked against
golden in tb/test_host.py."""
import types

from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from rtl.host import HostBridge, ctrl_block
from rtl.hostgen import HOST_PROTO_MODULE, render_host_proto
from rtl.protocol import REFUSED, BridgeOp, HostStatus
from rtl.write_verify import WriteVerify

IW, K = 5, 3


def _fake_ctrl():
    wv = WriteVerify(8, 128, 16)
    wv._MustUse__silence = True     # only its layouts are used
    res = data.StructLayout({"cls": 2, "logits": data.ArrayLayout(signed(24), K),
                             "p": data.ArrayLayout(unsigned(16), K), "delta": data.ArrayLayout(signed(17), K)})
    pp = types.SimpleNamespace(rd_layout=data.StructLayout({"pe": 3, "row": 7, "bl": 4}))
    return types.SimpleNamespace(image_words=IW, n_classes=K, n_pe=8, n_rows=128, n_bl=16, result_layout=res,
                                 wv=wv, pp=pp, code_bits=8)


def hdr(op, count, reserved=0):
    return op | reserved << 8 | count << 16


def cell(pe, row, bl, target=0):
    return target | bl << 8 | row << 16 | pe << 24


def trailer(w):
    return w & 0xFF, (w >> 8) & 0xFF, w >> 16


def _run(commands, ctrl_log):
    br = HostBridge(_fake_ctrl())
    sim = Simulator(br)
    sim.add_clock(1e-8)
    out = []
    st = {"img": [], "res": [], "cells": [], "finish": 0, "vq": []}

    def drive(ctx):
        """The stand-in controller's and the board's outputs: from their state only."""
        ctx.set(br.image.ready, len(st["res"]) < 2)
        ctx.set(br.result.valid, bool(st["res"]))
        if st["res"]:
            v = st["res"][0]
            ctx.set(br.result.payload.cls, v % 4)
            for k in range(K):
                ctx.set(br.result.payload.logits[k], -v - k)
                ctx.set(br.result.payload.p[k], v + k)
                ctx.set(br.result.payload.delta[k], -k)
        ctx.set(br.prog.ready, not st["cells"])
        ctx.set(br.upd_finish.ready, 1)
        ctx.set(br.prog_res.valid, bool(st["cells"]))
        if st["cells"]:
            pe, row, bl, t = st["cells"][0]
            ctx.set(br.prog_res.payload.pe, pe)
            ctx.set(br.prog_res.payload.row, row)
            ctx.set(br.prog_res.payload.bl, bl)
            ctx.set(br.prog_res.payload.ok, t != 60)
            ctx.set(br.prog_res.payload.pulses, row)
            ctx.set(br.prog_res.payload.final_code, t)
        ctx.set(br.upd_done.valid, st["finish"] == 1 and not st["cells"])
        ctx.set(br.vread_req.ready, 1)
        ctx.set(br.vread_rsp.valid, bool(st["vq"]))
        if st["vq"]:
            ctx.set(br.vread_rsp.payload.code, st["vq"][0])

    def observe(ctx):
        """Transfers of this cycle (sampled before the clock edge)."""
        ev = []
        if ctx.get(br.image.valid) and ctx.get(br.image.ready):
            ev.append(("img", ctx.get(br.image.payload), ctx.get(br.train)))
        if st["res"] and ctx.get(br.result.ready):
            ev.append(("res",))
        if ctx.get(br.prog.valid) and ctx.get(br.prog.ready):
            c = ctx.get(br.prog.payload)
            ev.append(("prog", (c.pe, c.row, c.bl, c.target)))
        if ctx.get(br.upd_finish.valid):
            ev.append(("finish",))
        if st["cells"] and ctx.get(br.prog_res.ready):
            ev.append(("res_taken",))
        if st["finish"] == 1 and not st["cells"] and ctx.get(br.upd_done.ready):
            ev.append(("done",))
        if st["vq"] and ctx.get(br.vread_rsp.ready):
            ev.append(("vrsp",))
        if ctx.get(br.vread_req.valid):
            q = ctx.get(br.vread_req.payload)
            ev.append(("vreq", q.row + q.bl))
        return ev

    def apply(ev):
        for e in ev:
            if e[0] == "img":
                st["img"].append(e[1])
                if len(st["img"]) == IW:
                    ctrl_log.append(("image", list(st["img"]), e[2]))
                    st["res"].append(sum(st["img"]) & 0xFFFF)
                    st["img"] = []
            elif e[0] == "res":
                st["res"].pop(0)
            elif e[0] == "prog":
                st["cells"].append(e[1])
                ctrl_log.append(e)
            elif e[0] == "finish":
                ctrl_log.append(e)
                st["cells"] += [(5, 2, 3, 40), (5, 3, 3, 60)]
                st["finish"] = 1
            elif e[0] == "res_taken":
                st["cells"].pop(0)
            elif e[0] == "done":
                st["finish"] = 0
            elif e[0] == "vrsp":
                st["vq"].pop(0)
            elif e[0] == "vreq":
                st["vq"].append(e[1])

    async def bench(ctx):
        for words in commands:
            got = []
            i = 0
            for _ in range(20000):
                drive(ctx)
                if i < len(words):
                    ctx.set(br.cmd.payload.data, words[i])
                    ctx.set(br.cmd.payload.last, i == len(words) - 1)
                ctx.set(br.cmd.valid, i < len(words))
                ctx.set(br.rsp.ready, 1)
                took = i < len(words) and ctx.get(br.cmd.ready)
                rv, rd, rl = ctx.get(br.rsp.valid), ctx.get(br.rsp.payload.data), ctx.get(br.rsp.payload.last)
                ev = observe(ctx)
                await ctx.tick()
                apply(ev)
                if took:
                    i += 1
                if rv:
                    got.append(rd)
                    if rl:
                        break
            else:
                raise AssertionError(f"no trailer for command {words[:2]}")
            ctx.set(br.cmd.valid, 0)
            out.append(got)

    sim.add_testbench(bench)
    sim.run()
    assert len(out) == len(commands), f"answered {len(out)} of {len(commands)} commands"
    return out


def test_command_set():
    log = []
    im = [[i * 10 + j for j in range(IW)] for i in range(3)]
    cmds = [
        [hdr(BridgeOp.ECHO, 3), 1, 2, 0xFFFFFFFF],
        [hdr(BridgeOp.INFER, 2), *im[0], *im[1]],
        [hdr(BridgeOp.PROGRAM, 2), cell(1, 20, 3, 100), cell(7, 127, 15, 25)],
        [hdr(BridgeOp.READ, 2), cell(2, 9, 4), cell(0, 1, 1)],
        [hdr(BridgeOp.TRAIN, 1), *im[2]],
        [hdr(BridgeOp.FINISH, 0)],
        # errors
        [hdr(0x55, 1), 7],                                  # unknown op
        [hdr(BridgeOp.ECHO, 1, reserved=1), 7],                   # reserved bits
        [hdr(BridgeOp.INFER, 1), 1, 2],                           # short image: padded
        [hdr(BridgeOp.PROGRAM, 2), cell(8, 0, 0, 10), cell(1, 1, 1, 50)],   # PE 8 does not exist
        [hdr(BridgeOp.ECHO, 1), 5, 6],                            # extra word
        [hdr(BridgeOp.READ, 3), cell(0, 2, 2)],                   # missing items
        [hdr(BridgeOp.ECHO, 0)],                                  # count 0, nothing: OK
    ]
    out = _run(cmds, log)
    ok = HostStatus.OK
    # ECHO
    assert out[0][:-1] == [0xFFFFFFFE, 0xFFFFFFFD, 0] and trailer(out[0][-1]) == (BridgeOp.ECHO, ok, 3)
    # INFER: RESULT_WORDS words per image: cls, logits (s32), p, delta (s32)
    rw = 1 + 3 * K
    assert len(out[1]) == 2 * rw + 1 and trailer(out[1][-1]) == (BridgeOp.INFER, ok, 2)
    for n in range(2):
        v = sum(im[n])
        r = out[1][n * rw:(n + 1) * rw]
        assert r[0] == v % 4, f"image {n}: cls {r[0]}, expected {v % 4}"
        assert r[1:1 + K] == [(-v - k) & 0xFFFFFFFF for k in range(K)], f"image {n}: logits {r[1:1 + K]}"
        assert r[1 + K:1 + 2 * K] == [v + k for k in range(K)], f"image {n}: p"
        assert r[1 + 2 * K:] == [(-k) & 0xFFFFFFFF for k in range(K)], f"image {n}: delta"
    assert [e for e in log if e[0] == "image"][:2] == [("image", im[0], 0), ("image", im[1], 0)]
    # PROGRAM: final_code | pulses << 8 | ok << 24
    assert out[2] [:-1] == [100 | 20 << 8 | 1 << 24, 25 | 127 << 8 | 1 << 24]
    assert trailer(out[2][-1]) == (BridgeOp.PROGRAM, ok, 2)
    assert ("prog", (1, 20, 3, 100)) in log and ("prog", (7, 127, 15, 25)) in log
    # READ: code (row + bl in the stand-in)
    assert out[3][:-1] == [13, 2] and trailer(out[3][-1]) == (BridgeOp.READ, ok, 2)
    # TRAIN: the image went with train = 1
    assert ("image", im[2], 1) in log and trailer(out[4][-1]) == (BridgeOp.TRAIN, ok, 1)
    # FINISH: cells, failed, pulses, flags
    assert out[5][:-1] == [2, 1, 5, 0], f"FINISH summary {out[5][:-1]}"
    assert trailer(out[5][-1]) == (BridgeOp.FINISH, ok, 4)
    # errors
    assert out[6] == [0x55 | HostStatus.BAD_OP << 8], f"unknown op: {out[6]}"
    assert trailer(out[7][-1]) == (BridgeOp.ECHO, HostStatus.BAD_ARG, 0) and len(out[7]) == 1
    assert trailer(out[8][-1]) == (BridgeOp.INFER, HostStatus.BAD_LENGTH, 1) and len(out[8]) == rw + 1
    assert [e for e in log if e[0] == "image"][3][1] == [1, 2, 0, 0, 0], "short image padded with zeros"
    assert out[9][:-1] == [REFUSED, 50 | 1 << 8 | 1 << 24]
    assert trailer(out[9][-1]) == (BridgeOp.PROGRAM, HostStatus.BAD_ARG, 2)
    assert out[10][:-1] == [0xFFFFFFFA] and trailer(out[10][-1]) == (BridgeOp.ECHO, HostStatus.BAD_LENGTH, 1)
    assert out[11][:-1] == [4] and trailer(out[11][-1]) == (BridgeOp.READ, HostStatus.BAD_LENGTH, 1)
    assert out[12] == [BridgeOp.ECHO]


def test_generated_host_constants_are_up_to_date():
    assert HOST_PROTO_MODULE.read_text() == render_host_proto(), \
        "sw/host_proto.py is out of date: run `python -m rtl.hostgen`"
    from sw import csr_map, host_proto
    assert host_proto.OPS == {o.name: int(o) for o in BridgeOp}
    assert csr_map.REGISTERS["ctrl_image_words"].reset == host_proto.IMAGE_WORDS == 197
    assert csr_map.REGISTERS["ctrl_result_words"].reset == host_proto.RESULT_WORDS == 31
    assert [r.name for r in ctrl_block().registers][:3] == ["eta_m", "eta_sh", "th_code"]
