"""Image buffer (rtl/image_buffer.py): images of random pixels (and all-0 / all-255 ones) with
random labels, streamed with random idle cycles; the next image is offered while the buffer is
full and must not be taken before `free`; every word read back on all read ports at random
addresses (data one cycle after the address) equals the documented packing (pixel 4n + k in bits
8k.. of word n, the label word last); `full` rises only after the label word, `label` changes
only at `start` (an image loaded meanwhile keeps its label apart). Expected values come from the
packing contract and the images themselves, not from the RTL.

Mutation seen caught: `load_last` compared against words - 1 instead of words - 2 (the label
word taken one word late) fails at once ("label 255 != 2": a pixel word taken as the label).
"""
import random

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None


def _words(px, label):
    """The stream's words from first principles: 4 pixels per word, first pixel in the low byte."""
    px = list(px) + [0] * (-len(px) % 4)
    return [px[i] | px[i + 1] << 8 | px[i + 2] << 16 | px[i + 3] << 24 for i in range(0, len(px), 4)] + [label]


async def _unit(dut, prefix, p, seed):
    from cocotb.triggers import ReadOnly, RisingEdge
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    u = harness.Port(dut, prefix)
    n_px, n_read = p["pixels"], p["n_read"]
    words = (n_px + 3) // 4 + 1
    aw = max(1, (words - 1).bit_length())
    u.free.value, u.start.value = 0, 0
    src = harness.StreamSource(dut, f"{prefix}__image", dut.clk, rng=random.Random(seed + 1))
    imgs = [np.zeros(n_px, int), np.full(n_px, 255)] + [nrng.integers(0, 256, n_px) for _ in range(p["images"])]
    labels = [rng.randrange(256) for _ in imgs]
    stream = [_words(x, lab) for x, lab in zip(imgs, labels)]
    mon = harness.StreamMonitor(dut, f"{prefix}__image", dut.clk)    # the words the buffer took
    cocotb.start_soon(mon.run())
    for ph, (idle, _) in enumerate(harness.phases(p)):
        src.idle = idle
        sender = cocotb.start_soon(src.send([w for s in stream for w in s]))
        base = len(mon.items)
        prev_label = None
        for n, exp in enumerate(stream):
            # wait for the image's last word; `full` stays low until it has been taken
            while len(mon.items) < base + (n + 1) * words:
                await ReadOnly()
                assert not int(u.full.value), f"{prefix}: full before image {n} was complete"
                await RisingEdge(dut.clk)
            await RisingEdge(dut.clk)
            await ReadOnly()
            assert int(u.full.value), f"{prefix}: not full after image {n}'s label word"
            if prev_label is not None:   # loaded while the previous image ran: label not yet switched
                assert int(u.label.value) == prev_label, f"{prefix}: label changed before start"
            await RisingEdge(dut.clk)
            u.start.value = 1
            await RisingEdge(dut.clk)
            u.start.value = 0
            # random reads on every port while the next image waits (it must not be taken)
            order = [rng.randrange(words) for _ in range(2 * words)] + list(range(words))
            pend = []
            for k in range(0, len(order), n_read):
                addrs = order[k:k + n_read] + [0] * (n_read - len(order[k:k + n_read]))
                u.rd_addr.value = sum(x << (aw * i) for i, x in enumerate(addrs))
                await RisingEdge(dut.clk)
                await ReadOnly()
                got = [int(u.rd_data.value) >> (32 * i) & 0xFFFFFFFF for i in range(n_read)]
                for x, g in zip(addrs, got):
                    assert g == exp[x], f"{prefix} phase {ph} image {n} word {x}: {g:#x} != {exp[x]:#x}"
                assert int(u.label.value) == labels[n], f"{prefix}: label {int(u.label.value)} != {labels[n]}"
                assert len(mon.items) == base + (n + 1) * words, f"{prefix}: a word taken while full"
                await RisingEdge(dut.clk)
                pend.append(got)
            while rng.random() < 0.5:
                await RisingEdge(dut.clk)
            u.free.value = 1
            await RisingEdge(dut.clk)
            u.free.value = 0
            await ReadOnly()
            assert not int(u.full.value), f"{prefix}: still full after free"
            await RisingEdge(dut.clk)
            prev_label = labels[n]
        await sender
    dut._log.info(f"{prefix}: {2 * len(stream)} images compared")


if cocotb is not None:
    @cocotb.test()
    async def image_buffer_random(dut):
        await harness.run_units(dut, _unit)


def _configs():
    return [  # the system's 28x28 image read by 2 lanes, a single-word image (label only after 1-4
        # pixels), an odd size read by 3 ports
        dict(pixels=784, n_read=2, images=3, idle=0.4, bp=0.0),
        dict(pixels=3, n_read=1, images=8, idle=0.5, bp=0.0),
        dict(pixels=37, n_read=3, images=6, idle=0.3, bp=0.0),
    ]


def test_image_buffer():
    from rtl.image_buffer import ImageBuffer
    cfgs = _configs()
    units = {f"u{k}": ImageBuffer((c["pixels"] + 3) // 4 + 1, c["n_read"]) for k, c in enumerate(cfgs)}
    harness.run_block(harness.Bundle(units), "image_buffer_tb", "tb.test_image_buffer", {"configs": cfgs, "seed": 14})
