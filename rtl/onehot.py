"""One-hot state machines for the blocks whose state decode was on their critical paths (issue 7)."""
from contextlib import contextmanager

from amaranth.hdl import Const, Signal


class OneHotFSM:
    """A one-hot FSM: `with fsm.state(name):` is `with m.If(<the state's flip-flop>):`, `fsm.go(name)`
    the transition (from the state whose body is being written); `fsm.finish()` builds each state
    bit as an AND-OR of its transitions; `fsm.bit[name]` is the state's flip-flop. Amaranth's FSM is
    binary-encoded and yosys does not re-encode it (the state register has an init value): the
    decode put 2-3 LUT levels in front of every path (timing, issue 7). The first name is the reset
    state."""

    def __init__(self, m, prefix, names):
        self.m = m
        self.bit = {n: Signal(init=(i == 0), name=f"{prefix}_{n.lower()}") for i, n in enumerate(names)}
        self.cur = None
        self.moves = []

    @contextmanager
    def state(self, name):
        self.cur = name
        with self.m.If(self.bit[name]):
            yield
        self.cur = None

    def go(self, name):
        g = Signal(name=f"go_{self.cur.lower()}_{name.lower()}")
        self.m.d.comb += g.eq(1)
        self.moves.append((self.cur, name, g))

    def finish(self):
        for n, bit in self.bit.items():
            enter = any_of(g for a, b, g in self.moves if b == n)
            leave = any_of(g for a, b, g in self.moves if a == n)
            self.m.d.sync += bit.eq(enter | (bit & ~leave))


def any_of(terms):
    out = Const(0, 1)
    for t in terms:
        out = out | t
    return out
