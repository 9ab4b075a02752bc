"""Helpers shared by the read-path block tests (encoder, ADC sequencer, accumulators).

Several stimulus scenarios (e.g. a clean one that measures throughput and a stressed one with
random idle cycles and back-pressure) run in one simulation, so each parameter set costs one
Verilator build: `reset()` re-initialises the DUT between scenarios and `Tasks` cancels the
drivers of the previous one.
"""
from __future__ import annotations


async def reset(dut, cycles: int = 3):
    from cocotb.triggers import RisingEdge
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


class Tasks:
    """Background coroutines of one scenario; `cancel()` stops them all."""

    def __init__(self):
        self.tasks = []

    def start(self, coro):
        import cocotb
        t = cocotb.start_soon(coro)
        self.tasks.append(t)
        return t

    def cancel(self):
        for t in self.tasks:
            if not t.done():
                t.cancel()
        self.tasks = []


def pack_array(values, width: int) -> int:
    """Pack a sequence of unsigned values into the integer of an ArrayLayout (element 0 = LSBs)."""
    mask = (1 << width) - 1
    return sum((int(v) & mask) << (j * width) for j, v in enumerate(values))


def unpack_array(value: int, width: int, n: int) -> list[int]:
    mask = (1 << width) - 1
    return [(int(value) >> (j * width)) & mask for j in range(n)]


class ScriptedArray:
    """A stand-in for golden.analog.IdealArray whose SL currents are chosen by the test.

    `codes[(pe, row_base)]` is an int array (B*M, n_rows) of the ADC codes wanted for the group
    read at that PE and first row, in the slot-major order golden.datapath.read_group_sums asks
    for them; read() returns the currents code * LSB, which the golden ADC turns back into exactly
    those codes. This drives the *golden* chain (shift_add, differential, group sum in
    layer_accumulate) with arbitrary codes, extremes included.
    """

    def __init__(self, lsb_ua: float):
        self.lsb = lsb_ua
        self.codes = {}

    def read(self, pe, bl_bits, rows):
        import numpy as np
        c = self.codes[(pe, rows.start)]
        assert c.shape == (bl_bits.shape[0], rows.stop - rows.start), (c.shape, bl_bits.shape, rows)
        return (c * self.lsb).astype(np.float32)
