"""Host retries with a deadline (sw.link.Link, docs/link.md "Host retry semantics"), on the
virtual clock of the simulated transports: a dead link fails at the deadline and not before,
shorter hangs recover, the backoff doubles up to its cap, and every state-changing command
(CSR_WRITE, RESET, STREAM: PROGRAM, TRAIN, FINISH) executes exactly once whatever is lost.
No wall-clock time is measured: the times checked are the transport's virtual clock."""
import random

import pytest

from sw import host_proto
from sw.devmodel import DeviceModel
from sw.driver import Board
from sw.faults import model_session, run_session
from sw.link import LinkTimeout
from sw.transport import FaultyTransport, ModelTransport, Transport

H = host_proto


class Lossy(ModelTransport):
    """The model device behind a line that loses requests (before the device sees them) and
    answers (after the device executed the request): the first `first_req` requests, then the
    next `first_rsp` answers, then each with probability p_req / p_rsp (seeded). Logs the
    clock time of every write."""

    def __init__(self, model, seed=0, p_req=0.0, p_rsp=0.0, first_req=0, first_rsp=0):
        super().__init__(model)
        self.rng = random.Random(seed)
        self.p_req, self.p_rsp, self.first_req, self.first_rsp = p_req, p_rsp, first_req, first_rsp
        self.lost_req = self.lost_rsp = 0
        self.times = []

    def write(self, data):
        self.times.append(self.clock.now())
        if self.first_req > 0 or self.rng.random() < self.p_req:
            self.first_req -= 1
            self.lost_req += 1
            self.clock.transfer(len(data))
            return
        super().write(data)
        if self.first_rsp > 0 or self.rng.random() < self.p_rsp:
            self.first_rsp -= 1
            self.lost_rsp += 1
            self.rx.clear()


class Bridge:
    """Stand-in for the host bridge behind STREAM (protocol only): logs every execution; a PROGRAM
    cell's answer carries the execution's index as its pulse count, so a command executed twice
    changes every later answer."""

    def __init__(self):
        self.log = []

    def __call__(self, words):
        op, n = H.get(words[0], H.HEADER["op"]), H.get(words[0], H.HEADER["count"])
        self.log.append((op, tuple(words[1:])))
        if op == H.PROGRAM:
            ans = [H.put(H.PROG_RES["ok"], 1) | H.put(H.PROG_RES["pulses"], len(self.log))
                   | H.put(H.PROG_RES["final_code"], H.get(w, H.CELL["target"])) for w in words[1:]]
        elif op == H.FINISH:
            ans = [len(self.log), 0, 0, 0]
        else:
            ans = []
        return ans + [H.put(H.TRAILER["op"], op) | H.put(H.TRAILER["status"], H.STATUS["OK"][0])
                      | H.put(H.TRAILER["count"], n)]


def dead_after_open(**kw):
    t = Lossy(DeviceModel())
    c = Board(t, **kw).open()
    t.p_req = 1.0
    return t, c


# ------------------------------------------------------------------ the deadline

def test_dead_link_fails_at_the_deadline():
    """timeout 1 s, backoff 0.05 s doubling to 1 s: attempts start at 0, 1.05, 2.15, 3.35, 4.75,
    6.55, 8.55, then every 2 s up to 28.55 -> 17 attempts, LinkTimeout at 30 s (virtual)."""
    t, c = dead_after_open(timeout=1.0, deadline=30.0)
    t0 = t.clock.now()
    with pytest.raises(LinkTimeout) as e:
        c.write_csr("link_scratch", 5)
    assert e.value.attempts == 17 and e.value.problems == {"timeout": 17}
    assert e.value.elapsed == pytest.approx(30.0) and t.clock.now() - t0 == pytest.approx(30.0)
    assert "17 attempts in 30 s (17 x timeout); the link stayed dead past the 30 s deadline" in str(e.value)
    assert c.link.pending is not None and c.link.stats.failed == 1
    # a short deadline: attempts at 0, 1.05, 2.15, 3.35, 4.75 (cut at 5 s)
    with pytest.raises(LinkTimeout) as e:
        c.link.transact(0x01, b"", deadline=5.0)
    assert e.value.attempts == 5 and e.value.elapsed == pytest.approx(5.0)


def test_default_deadline_scales_with_the_timeout():
    t, c = dead_after_open(timeout=4.0)                  # no deadline given: max(30 s, 10 timeouts)
    with pytest.raises(LinkTimeout) as e:
        c.read_csr("link_scratch")
    assert e.value.elapsed == pytest.approx(40.0)
    with pytest.raises(LinkTimeout) as e:               # a deadline shorter than one timeout: one attempt
        c.link.transact(0x01, b"", deadline=0.5)
    assert e.value.attempts == 1 and e.value.elapsed == pytest.approx(4.0)


def test_backoff_doubles_up_to_its_cap():
    t, c = dead_after_open(timeout=1.0, deadline=30.0)
    n0 = len(t.times)
    with pytest.raises(LinkTimeout):
        c.read_csr("link_scratch")
    w = t.times[n0:]
    pauses = [b - a - 1.0 for a, b in zip(w, w[1:])]      # each attempt waits its 1 s timeout
    assert pauses == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8] + [1.0] * 11, abs=0.005)
    c.link.backoff, c.link.backoff_max = 0.3, 0.7
    n0 = len(t.times)
    with pytest.raises(LinkTimeout):
        c.link.transact(0x01, b"", deadline=8.0)    # attempts at 0, 1.3, 2.9, 4.6, 6.3
    w = t.times[n0:]
    assert [b - a - 1.0 for a, b in zip(w, w[1:])] == pytest.approx([0.3, 0.6, 0.7, 0.7], abs=0.005)


HANGS = [0.001, 0.7, 3.3, 12.0, 27.9] + [round(random.Random(5).uniform(0, 28), 3) for _ in range(5)]


@pytest.mark.parametrize("hang", HANGS)
def test_hang_shorter_than_the_deadline_recovers(hang):
    """A hang of h seconds ends at most one timeout (the attempt it swallowed) + one capped pause
    before the next attempt: every h < 30 - 2 recovers, executed once, within h + 2 s."""
    m = DeviceModel()
    faulty = FaultyTransport(ModelTransport(m), rate=0.0)
    c = Board(faulty, timeout=1.0, deadline=30.0).open()
    e0 = m.counters["executed"]
    faulty.hang(hang)
    t0 = faulty.clock.now()
    c.write_csr("link_scratch", 0x77)
    took = faulty.clock.now() - t0
    assert hang <= took <= hang + 2.01
    assert m.values["link_scratch"] == 0x77 and m.counters["executed"] - e0 == 1


def test_hang_past_the_deadline_fails_then_resolves_once():
    m = DeviceModel()
    faulty = FaultyTransport(ModelTransport(m), rate=0.0)
    c = Board(faulty, timeout=1.0, deadline=30.0).open()
    e0 = m.counters["executed"]
    faulty.hang(29.0)                        # the last attempt (28.55 s) is swallowed too
    with pytest.raises(LinkTimeout, match="dead past the 30 s deadline"):
        c.reset(controller=True)
    assert m.soft_resets == 0
    c.link.resolve()                         # the hang is over: the same frame, executed now
    assert m.soft_resets == 1 and m.counters["executed"] - e0 == 1


class Slow(ModelTransport):
    """The model device whose answers arrive `delay` seconds (virtual) after the request."""

    def __init__(self, model, delay):
        super().__init__(model)
        self.delay, self.queue = delay, []

    def write(self, data):
        self.clock.transfer(len(data))
        out = self.model.feed(data)
        if out:
            self.queue.append((self.clock.now() + self.delay, out))

    def read(self, timeout):
        if self.queue and self.queue[0][0] <= self.clock.now() + timeout:
            t, out = self.queue.pop(0)
            self.clock.sleep(t - self.clock.now())
            return out
        return b""


def test_late_answer_during_the_backoff_is_taken():
    """An answer that comes 1.02 s after the request (the attempt waits 1 s) arrives in the first
    backoff pause (0.05 s): taken, no frame sent again."""
    m = DeviceModel()
    t = Slow(m, 0.0)
    c = Board(t, timeout=1.0, deadline=30.0).open()
    t.delay = 1.02
    a0, e0 = c.link.stats.attempts, m.counters["executed"]
    c.write_csr("link_scratch", 0x55)
    assert (c.link.stats.attempts - a0, c.link.stats.late, c.link.stats.problems["timeout"]) == (1, 1, 1)
    assert m.counters["executed"] - e0 == 1 and m.counters["dup_frames"] == 0


# ------------------------------------------------------------------ exactly once

KINDS = ("csr", "reset", "program", "train", "finish")


def _one(c, kind, rng, expected):
    """One state-changing command of `kind`, its answer checked; appends what the bridge must have
    executed to `expected`; -> 1 for a soft reset, else 0."""
    if kind == "csr":
        v = rng.randrange(1 << 32)
        c.write_csr("link_scratch", v)
        assert c.transport.model.values["link_scratch"] == v
    elif kind == "reset":
        c.reset(controller=True)
        return 1
    elif kind == "program":
        cells = [(rng.randrange(8), rng.randrange(128), rng.randrange(16), rng.randrange(256))
                 for _ in range(rng.randint(1, 4))]
        res = c.program_cells(cells)
        expected.append((H.PROGRAM, tuple(c._cell_word(*x) for x in cells)))
        assert [(r.pulses, r.final_code) for r in res] == [(len(expected), x[3]) for x in cells]
    elif kind == "train":
        words = [rng.randrange(1 << 32) for _ in range(rng.randint(1, 6))]
        c.host_command(H.TRAIN, words, count=1)
        expected.append((H.TRAIN, tuple(words)))
    else:
        assert c.finish_batch()["cells"] == len(expected) + 1
        expected.append((H.FINISH, ()))
    return 0


@pytest.mark.parametrize("first_req,first_rsp", [(0, 1), (1, 0), (4, 4), (9, 6), (0, 14)])
@pytest.mark.parametrize("kind", KINDS)
def test_each_command_once_after_lost_requests_and_answers(kind, first_req, first_rsp):
    """Each kind of state-changing command, its first requests and then its first answers lost."""
    bridge = Bridge()
    m = DeviceModel(stream=bridge)
    t = Lossy(m)
    c = Board(t, timeout=1.0, deadline=30.0).open()
    e0 = m.counters["executed"]
    t.first_req, t.first_rsp = first_req, first_rsp
    expected = []
    resets = _one(c, kind, random.Random(first_req * 100 + first_rsp), expected)
    assert (t.lost_req, t.lost_rsp) == (first_req, first_rsp)
    assert m.counters["executed"] - e0 == 1
    assert bridge.log == expected and m.soft_resets == resets


@pytest.mark.parametrize("seed", range(3))
def test_random_losses_every_command_once(seed):
    bridge = Bridge()
    m = DeviceModel(stream=bridge)
    t = Lossy(m, seed=seed, p_req=0.3, p_rsp=0.3)
    c = Board(t, timeout=1.0, deadline=30.0, seq=seed).open()
    e0 = m.counters["executed"]
    rng, expected = random.Random(seed), []
    resets = sum(_one(c, rng.choice(KINDS), rng, expected) for _ in range(80))
    assert t.lost_req > 20 and t.lost_rsp > 20
    assert m.counters["executed"] - e0 == 80
    assert bridge.log == expected and m.soft_resets == resets


# ------------------------------------------------------------------ the fault session

def test_session_is_deterministic_in_virtual_time():
    a, b = model_session(300, seed=4), model_session(300, seed=4)
    a.pop("seconds"), b.pop("seconds")
    assert a == b and a["virtual_seconds"] > 60 and a["failed"] == a["undetected"] == a["executed_twice"] == 0


class Forgetful(DeviceModel):
    """A device without duplicate suppression: a repeated frame executes again."""

    def _check(self):
        self.record = None
        return super()._check()


def test_session_counts_commands_executed_twice():
    faulty = FaultyTransport(ModelTransport(Forgetful()), seed=3, rate=0.3, kinds=["drop", "truncate"])
    r = run_session(Board(faulty, seq=3), faulty, 300, seed=3)
    assert r["failed"] == 0 and r["executed_twice"] > 10
    assert r["executed_twice"] == r["executed_growth"] - r["executed_bounds"][1]
    assert r["undetected"] >= r["executed_twice"]


class Chunked(Transport):
    """Answers every write with `answer`, `k` bytes per read."""

    def __init__(self, answer, k):
        self.answer, self.k, self.rx = answer, k, b""

    def write(self, data):
        self.rx = self.answer

    def read(self, timeout):
        out, self.rx = self.rx[:self.k], self.rx[self.k:]
        return out


@pytest.mark.parametrize("n_answer,k", [(1024, 1024), (1024, 64), (1024, 3), (11, 11), (11, 1)])
def test_answer_faults_do_not_depend_on_chunking(n_answer, k):
    """An answer is faulted with probability rate (rate x n/32 below 32 bytes) whether the transport
    returns it whole, in 64-byte pieces (the co-simulation) or byte by byte (a serial port)."""
    answer = bytes(range(256)) * 4
    answer = answer[:n_answer]
    faulty = FaultyTransport(Chunked(answer, k), seed=k, rate=0.2, kinds=["bitflip"])
    n, hit = 3000, 0
    for _ in range(n):
        faulty.write(b"request-11b")
        got = b"".join(iter(lambda: faulty.read(1.0), b""))
        hit += got != answer
    want = 0.2 * min(1.0, n_answer / 32)
    assert abs(hit / n - want) < 4 * (want * (1 - want) / n) ** 0.5 + 0.002
