"""Programming journal (sw/journal.py, docs/link.md "Programming journal") and the driver's input checks.

The device is the Python link model (sw/devmodel.py) with a small stand-in for the controller's
host bridge on its STREAM (FakeBridge: PROGRAM answers a fixed function of the cell and target and
counts every cell it programs; TRAIN/FINISH count what they run). The kill-anywhere test runs that
device in its own process, served on a Unix socket with the SimTransport protocol, and the host
(`mcnn board --port unix:... --journal/--resume`) in another, SIGKILLed by the device server at
chosen points of the byte stream; the per-cell program counts are taken on the device side.

    python tests/test_journal.py kill N [SEED]     N random kill points, one JSON line (the report's figure)
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sw import host_proto  # noqa: E402
from sw.devmodel import DeviceModel  # noqa: E402
from sw.link import FrameParser, LinkTimeout  # noqa: E402
from sw.transport import ModelTransport  # noqa: E402

SMALL = 64          # device buffers of 64 bytes: 15 cells per PROGRAM chunk


def expected(pe, row, bl, target):
    """The FakeBridge's write-verify answer of a cell: (ok, pulses, final_code)."""
    pulses = (pe * 131 + row * 17 + bl * 5 + target) % 40 + 1
    ok = pulses < 37
    return ok, pulses, target if ok else max(0, target - 3)


class FakeBridge:
    """The controller's host bridge, as far as these tests need it (rtl/host.py's answers)."""

    def __init__(self, broken=(), log=None):
        self.programmed = Counter()
        self.broken = set(broken)       # cells the device refuses although they are in the array
        self.log = log
        self.trained = 0
        self.finishes = 0

    def __call__(self, words):
        op, n = words[0] & 0xFF, words[0] >> 16
        items, ans, status = words[1:], [], 0
        if op == host_proto.PROGRAM:
            for w in items:
                pe, row, bl, t = w >> 24, (w >> 16) & 0xFF, (w >> 8) & 0xFF, w & 0xFF
                if pe >= 8 or row >= 128 or bl >= 16 or (pe, row, bl) in self.broken:
                    ans.append(host_proto.REFUSED)
                    status = 3
                    continue
                self.programmed[(pe, row, bl)] += 1
                if self.log:
                    self.log.write(f"{pe} {row} {bl} {t}\n")
                    self.log.flush()
                ok, p, c = expected(pe, row, bl, t)
                ans.append(c | p << 8 | int(ok) << 24)
        elif op == host_proto.TRAIN:
            for i in range(n):
                img = items[i * 197:(i + 1) * 197]
                ans += [(img[0] + img[-1]) % 10] + [0] * 30      # class: first word + label, mod 10
            self.trained += n
        elif op == host_proto.FINISH:
            self.finishes += 1
            ans = [3 * self.finishes, 0, 7, 0]
        return ans + [op | status << 8 | len(ans) << 16]


def cells_plan(n, seed=1):
    rng = random.Random(seed)
    every = [(pe, row, bl) for pe in range(8) for row in range(128) for bl in range(16)]
    return [(*c, rng.randint(20, 200)) for c in rng.sample(every, n)]


class Cut:
    """Transport wrapper: after `after` frames, lose the requests ('request') or the answers
    ('answer') -- a link that died mid-transfer; .alive = True restores it."""

    def __init__(self, inner, after, lose):
        self.inner, self.after, self.lose, self.writes, self.alive = inner, after, lose, 0, True

    def write(self, data):
        self.writes += 1
        if self.writes > self.after and self.alive is not True:
            if self.lose == "request":
                return
        self.inner.write(data)

    def read(self, timeout):
        data = self.inner.read(timeout)
        return b"" if self.writes > self.after and self.alive is not True else data

    def close(self):
        pass


def _device(max_payload=SMALL, **kw):
    bridge = FakeBridge(**kw)
    return DeviceModel(max_payload=max_payload, max_response=max_payload, stream=bridge), bridge


def _board(tr):
    from sw.driver import Board
    return Board(tr, retries=1, resolve_tries=1, seq=7)


# ------------------------------------------------------------------ journal file

def test_journal_torn_last_line_and_corruption(tmp_path):
    from sw.journal import Journal, JournalError
    p = tmp_path / "j.jsonl"
    j = Journal.new(p, config={"session": "program"})
    j.start("program", {"id": 1}, "h", {"chunk": 2}, 3)
    j.record_sent(0, 5, b"\xa5\x5a")
    j.record_done(0, 0, [1, 2])
    j.record_sent(1, 6, b"\x01")
    j.close()
    with open(p, "ab") as f:
        f.write(b'{"k":"done","chunk":1,"status":0,"answers":[' + b"123456789," * 20)   # torn by a kill
    r = Journal.load(p)
    assert r.pending == [1] and r.done[0]["answers"] == [1, 2] and r.config == {"session": "program"}
    r.record_done(1, 0, [3])                                 # cuts the torn tail off first
    r.close()
    r2 = Journal.load(p)
    assert r2.pending == [] and r2.done[1]["answers"] == [3]
    assert p.read_text().count("\n") == len(p.read_text().splitlines()) == 5
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:2] + ["{oops"] + lines[2:]) + "\n")
    try:
        Journal.load(p)
        raise AssertionError("a corrupt middle line was accepted")
    except JournalError as e:
        assert "line 3" in str(e)
    try:
        Journal.new(p)
        raise AssertionError("an existing journal was overwritten without force")
    except JournalError as e:
        assert "exists" in str(e)


# ------------------------------------------------------------------ input checks

def test_cells_checked_against_the_array_before_sending():
    from sw.driver import InputError
    model, bridge = _device()
    c = _board(ModelTransport(model)).open()
    sent = c.link.stats.attempts
    for bad, what in [((8, 0, 0, 10), "pe 8 outside 0..7"), ((0, 128, 0, 10), "row 128 outside 0..127"),
                      ((0, 0, 16, 10), "bl 16 outside 0..15"), ((0, 0, 0, 256), "target 256 outside 0..255"),
                      ((-1, 0, 0, 10), "pe -1"), ((0, 1.5, 0, 10), "row 1.5"), ((0, 0, 0), "expected")]:
        cells = [(7, 127, 15, 255), (0, 0, 0, 0), bad]
        try:
            c.program_cells(cells)
            raise AssertionError(f"{bad} accepted")
        except InputError as e:
            assert "cell 2" in str(e) and what in str(e), str(e)
            assert "\n" not in str(e)
    assert c.link.stats.attempts == sent and not bridge.programmed      # nothing sent
    assert [r.pulses for r in c.program_cells([(7, 127, 15, 255)])] == [expected(7, 127, 15, 255)[1]]


def test_images_and_labels_checked():
    import numpy as np

    from sw.driver import Board, InputError
    model, bridge = _device(max_payload=1024)
    c = _board(ModelTransport(model)).open()
    img = np.full((28, 28), 7, dtype=np.uint8)
    cases = [(img.astype(np.int64) + 250, 1, "pixel 0 = 257"), (img.astype(np.int64) - 8, 1, "pixel 0 = -1"),
             (img[:27], 1, "784"), (img.astype(float) + 0.5, 1, "pixel 0 = 7.5"), (img, 10, "label 10"),
             (img, -1, "label -1"), (img, 256, "label 256"), (img, 2.5, "label 2.5")]
    nan = img.astype(float)
    nan[3, 4] = np.nan
    cases.append((nan, 1, "pixel 88 = nan"))
    sent = c.link.stats.attempts
    for im, lab, what in cases:
        for fn in (c.infer, lambda i, la: c.train_fc([i], [la])):
            try:
                fn([img, im], [0, lab])
                raise AssertionError(f"{what} accepted")
            except InputError as e:
                assert what in str(e) and "image 1" in str(e), str(e)
    assert bridge.trained == 0
    assert c.link.stats.attempts - sent <= 2 * len(cases)      # only the parameter reads went out
    w = Board.image_words(img, 9, 784, 10)
    assert w[-1] == 9 and w[0] == 0x07070707 and len(w) == 197


# ------------------------------------------------------------------ failures return every result

def test_refused_cell_named_and_every_result_returned():
    from sw.driver import TransferError
    plan = cells_plan(40)
    model, bridge = _device(broken=[plan[33][:3]])
    c = _board(ModelTransport(model)).open()
    try:
        c.program_cells(plan)
        raise AssertionError("refusal not raised")
    except TransferError as e:
        assert e.cell == (33, plan[33]) and "cell 33" in str(e) and "refused" in str(e)
        got = {(r.pe, r.row, r.bl): (r.ok, r.pulses, r.final_code) for r in e.results}
        # chunks of 15: cells 0..29 and 30..44 of the refusing chunk (the refused one excepted)
        assert len(e.results) == 39 and plan[33][:3] not in got
        assert got == {x[:3]: expected(*x) for x in plan[:40] if x != plan[33]}


def _interrupted(lose, tmp_path, n=100, cut_after=4):
    from sw.driver import TransferError
    from sw.journal import Journal
    plan = cells_plan(n)
    model, bridge = _device()
    tr = Cut(ModelTransport(model), after=3 + cut_after, lose=lose)    # 3: OPEN + PING + IDENTIFY of open()
    tr.alive = False
    j = Journal.new(tmp_path / "t.jsonl", config={"session": "program"})
    c = _board(tr)
    try:
        c.program_cells(plan, journal=j)
        raise AssertionError("a dead link was not reported")
    except TransferError as e:
        err = e
    j.close()
    return plan, model, bridge, tr, err


def test_lost_link_returns_results_and_resume_programs_each_cell_once(tmp_path):
    from sw.journal import Journal
    for lose in ("request", "answer"):
        plan, model, bridge, tr, e = _interrupted(lose, tmp_path / lose if (tmp_path / lose).mkdir() is None else None)
        assert len(e.results) == 60 and e.cell == (60, plan[60]) and "cell 60" in str(e)
        assert isinstance(e, LinkTimeout) and e.attempts == 2      # fault sessions count it as a failure
        assert [(r.ok, r.pulses, r.final_code) for r in e.results] == [expected(*x) for x in plan[:60]]
        assert sum(bridge.programmed.values()) == (60 if lose == "request" else 75)
        tr.alive = True
        j = Journal.load(tmp_path / lose / "t.jsonl")
        assert j.pending == [4]
        res = _board(ModelTransport(model)).program_cells(plan, journal=j)     # a new host, the same device
        assert [(r.pe, r.row, r.bl, r.target) for r in res] == plan
        assert [(r.ok, r.pulses, r.final_code) for r in res] == [expected(*x) for x in plan]
        assert set(bridge.programmed.values()) == {1} and len(bridge.programmed) == len(plan)
        assert Journal.load(tmp_path / lose / "t.jsonl").complete
        assert Journal.load(tmp_path / lose / "t.jsonl").done[4].get("settled")


def test_frame_journaled_before_it_leaves(tmp_path, monkeypatch):
    """Write-ahead: when a PROGRAM frame reaches the transport, its "sent" record (SEQ, exact bytes)
    is already on disk and fsynced; its answers are on disk before the next frame leaves."""
    from sw import journal as jmod
    from sw.journal import Journal
    plan = cells_plan(50)
    model, bridge = _device()
    path = tmp_path / "w.jsonl"
    seen, synced, fsync = [], [0], os.fsync

    def spy_fsync(fd):
        fsync(fd)
        st = os.fstat(fd)
        if path.exists() and st.st_ino == path.stat().st_ino:
            synced[0] = st.st_size
    monkeypatch.setattr(jmod.os, "fsync", spy_fsync)

    class Spy(ModelTransport):
        def write(self, data):
            fr = FrameParser().feed(data)[0]
            if fr.code == 0x20:                       # STREAM
                recs = [json.loads(ln) for ln in path.read_text().splitlines()[1:]]
                sent = [r for r in recs if r["k"] == "sent"]
                assert sent and bytes.fromhex(sent[-1]["frame"]) == data and sent[-1]["seq"] == fr.seq
                assert len([r for r in recs if r["k"] == "done"]) == len(sent) - 1
                assert synced[0] == path.stat().st_size            # all of it fsynced
                seen.append(sent[-1]["chunk"])
            super().write(data)
    j = Journal.new(path)
    res = _board(Spy(model)).program_cells(plan, journal=j)
    assert seen == [0, 1, 2, 3] and len(res) == 50


def test_resume_checks_the_plan_and_the_frame(tmp_path):
    from sw.journal import Journal, JournalError
    plan, model, bridge, tr, e = _interrupted("answer", tmp_path)
    tr.alive = True
    other = plan[:-1] + [(0, 0, 0, 99)]
    before = model.counters["executed"]
    for cells, what in ((other, "plan_hash"), (plan[:50], "plan_hash")):
        try:
            _board(ModelTransport(model)).program_cells(cells, journal=Journal.load(tmp_path / "t.jsonl"))
            raise AssertionError("another plan resumed")
        except JournalError as err:
            assert what in str(err)
    assert model.counters["executed"] == before          # nothing reached the device
    # a journaled frame that the plan no longer rebuilds is not resent
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    sent = json.loads(lines[-1])
    sent["frame"] = sent["frame"][:-2] + ("00" if sent["frame"][-2:] != "00" else "01")
    (tmp_path / "t.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(sent)]) + "\n")
    try:
        _board(ModelTransport(model)).program_cells(plan, journal=Journal.load(tmp_path / "t.jsonl"))
        raise AssertionError("a different frame was resent")
    except JournalError as err:
        assert "another frame than the journaled one" in str(err)
    assert model.counters["executed"] == before


def test_training_session_journaled_and_resumed(tmp_path):
    import numpy as np

    from sw.driver import TransferError
    from sw.journal import Journal
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (3, 28, 28), dtype=np.uint8) for _ in range(3)]
    labels = [rng.integers(0, 10, 3) for _ in range(3)]
    model, bridge = _device(max_payload=1024)
    # open 2 + learning writes 2 + per batch: counters, 3 TRAIN, FINISH, counters = 6 frames
    tr = Cut(ModelTransport(model), after=2 + 2 + 6 + 4, lose="answer")
    tr.alive = False
    j = Journal.new(tmp_path / "t.jsonl")
    try:
        _board(tr).train_fc(batches, labels, eta_params=(5, 3), journal=j)
        raise AssertionError("not interrupted")
    except TransferError as e:
        assert len(e.results) == 1 and e.results[0]["cells"] == 3 and "batch 1" in str(e)
    j.close()
    tr.alive = True
    r = _board(ModelTransport(model)).train_fc(batches, labels, eta_params=(5, 3),
                                              journal=Journal.load(tmp_path / "t.jsonl"))
    assert bridge.trained == 9 and bridge.finishes == 3           # every image and batch once
    assert [b["cells"] for b in r["batches"]] == [3, 6, 9] and r["images"] == 9
    errs = [sum(int((img.reshape(-1)[:4] @ [1, 256, 65536, 1 << 24] + lab) % 10) != lab for img, lab in zip(b, lb))
            for b, lb in zip(batches, labels)]
    assert [b["errors"] for b in r["batches"]] == errs


# ------------------------------------------------------------------ kill anywhere

def serve(sock_path, log_path, kills):
    """The device process: the model + FakeBridge on a Unix socket (SimTransport protocol). kills:
    [(offset, mode, delay_ms)] over the bytes received: 'cut' stops the frame there and kills the
    host, 'end' takes the whole frame (it executes), kills the host before answering, 'after'
    answers, waits delay_ms and kills the host."""
    from sw.transport import MSG_DATA, MSG_IDLE, MSG_QUERY, MsgReader, pack_msg
    log = open(log_path, "a")
    model = DeviceModel(max_payload=SMALL, max_response=SMALL, stream=FakeBridge(log=log))
    kills = sorted(kills)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    received = 0
    while True:
        conn, _ = srv.accept()
        pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
        reader, killed = MsgReader(), False
        send = _sender(conn)
        while data := _recv(conn):
            for kind, body in reader.feed(data):
                if kind == MSG_QUERY:
                    send(pack_msg(MSG_IDLE, body))
                    continue
                if kind != MSG_DATA:
                    continue
                if not killed and kills and received + len(body) >= kills[0][0]:
                    off, mode, delay = kills.pop(0)
                    if mode == "cut":
                        model.feed(body[:max(0, off - received)])
                        received = off
                        os.kill(pid, signal.SIGKILL)
                        killed = True
                        continue
                    out = model.feed(body)
                    received += len(body)
                    if mode == "after":
                        send(pack_msg(MSG_DATA, out))
                        time.sleep(delay / 1000)
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                    continue
                received += len(body)
                out = model.feed(body)
                if out:
                    send(pack_msg(MSG_DATA, out))
        model.idle()            # the line went quiet: a partial frame is dropped (byte timeout)
        conn.close()


def _sender(conn):
    def send(b):
        try:
            conn.sendall(b)
        except OSError:
            pass                # the host is dead
    return send


def _recv(conn):
    try:
        return conn.recv(65536)
    except OSError:
        return b""


def kill_run(tmp, n_cells, kills, seed=1):
    """Start the device process, run the host until the transfer completes (resuming after each
    kill); -> (programmed counts, final report, host runs, kills that hit)."""
    plan = cells_plan(n_cells, seed)
    sock, log, jpath = str(tmp / "dev.sock"), tmp / "programmed.log", tmp / "transfer.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    dev = subprocess.Popen([sys.executable, __file__, "serve", sock, str(log), json.dumps(kills)], env=env)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.02)
        cells = ";".join(",".join(map(str, c)) for c in plan)
        host = [sys.executable, "-m", "sw.cli", "board", "--port", "unix:" + sock, "--json", "--timeout", "5"]
        runs, killed = 0, 0
        while True:
            args = ["--resume", str(jpath)] if jpath.exists() else ["--session", "program", "--cells", cells,
                                                                      "--journal", str(jpath)]
            p = subprocess.run(host + args, env=env, cwd=ROOT, capture_output=True, text=True)
            runs += 1
            if p.returncode == -signal.SIGKILL:
                killed += 1
                continue
            assert p.returncode == 0, p.stderr
            report = json.loads(p.stdout)
            break
    finally:
        dev.kill()
        dev.wait()
    counts = Counter(tuple(map(int, ln.split()[:3])) for ln in log.read_text().splitlines())
    settled = sum(bool(json.loads(ln).get("settled")) for ln in jpath.read_text().splitlines())
    return plan, counts, {**report, "settled_chunks": settled}, runs, killed


def check_kill_run(plan, counts, report):
    want = {c[:3]: expected(*c) for c in plan}
    got = {(r["pe"], r["row"], r["bl"]): (r["ok"], r["pulses"], r["final_code"]) for r in report["results"]}
    return {"cells": len(plan), "programmed_twice": sum(v > 1 for v in counts.values()),
            "never_programmed": len(set(want) - set(counts)), "results": len(report["results"]),
            "results_lost_or_wrong": sum(got.get(c) != v for c, v in want.items())}


def test_kill_anywhere_then_resume(tmp_path):
    """Host SIGKILLed mid-frame, after a frame executed but before its answer, and while journaling
    an answer; every resume settles the chunk in doubt: each cell programmed once, the report whole."""
    kills = [[30, "end", 0], [250, "cut", 0], [520, "end", 0], [800, "after", 0], [1000, "after", 3]]
    plan, counts, report, runs, killed = kill_run(tmp_path, 200, kills)
    assert killed == len(kills) and runs == killed + 1
    assert check_kill_run(plan, counts, report) == {"cells": 200, "programmed_twice": 0, "never_programmed": 0,
                                                    "results": 200, "results_lost_or_wrong": 0}
    assert len(report["results"]) == len({(r["pe"], r["row"], r["bl"]) for r in report["results"]})
    assert report["settled_chunks"] >= 2          # the 'end' kills leave a chunk in doubt


def test_cli_journal_and_resume(tmp_path, capsys):
    """mcnn board --journal / --resume, and the bad inputs of the journaled session: one line, exit 2."""
    from sw.cli import main
    sock, log = str(tmp_path / "dev.sock"), tmp_path / "programmed.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dev = subprocess.Popen([sys.executable, __file__, "serve", sock, str(log), "[]"], env=env)
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.02)
        port = ["board", "--port", "unix:" + sock, "--json"]
        j = tmp_path / "j.jsonl"
        bad = [(port + ["--session", "program", "--cells", "1,2,3,40;8,0,0,5", "--journal", str(j)],
                "cell '8,0,0,5': pe 8 outside 0..7"),
               (["board", "--sim", "program", "--journal", str(j)], "need --port"),
               (port + ["--resume", str(tmp_path / "none.jsonl")], "cannot read the journal"),
               (port + ["--session", "read", "--cells", "1,2,3", "--journal", str(j)], "not read"),
               (port + ["--session", "program", "--cells", "1,2,3,4", "--journal", str(tmp_path / "x" / "j")],
                "does not exist"),
               (port + ["--journal", str(j), "--resume", str(j)], "give one of them"),
               (["board", "--sim", "program", "--device", "controller", "--cells", "0,0,0,300"],   # before the cosim
                "target 300 outside 0..255"),
               (["board", "--sim", "read", "--device", "controller", "--cells", "0,x,0"], "expected integers")]
        for argv, msg in bad:
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert msg in err and err.count("\n") == 1, err
        assert not j.exists() and log.read_text() == ""               # nothing programmed
        cells = [(1, 2, 3, 40), (4, 5, 6, 70), (7, 127, 15, 255)]
        good = port + ["--session", "program", "--cells", ";".join(",".join(map(str, c)) for c in cells),
                       "--journal", str(j)]
        assert main(good) == 0
        first = json.loads(capsys.readouterr().out)["results"]
        assert [(r["ok"], r["pulses"], r["final_code"]) for r in first] == [expected(*c) for c in cells]
        assert main(good) == 2 and "exists" in capsys.readouterr().err
        assert main(port + ["--resume", str(j)]) == 0                     # complete: answered from the journal
        assert json.loads(capsys.readouterr().out)["results"] == first
        assert len(log.read_text().splitlines()) == 3                    # nothing programmed again
    finally:
        dev.kill()
        dev.wait()


def kill_random(n, seed):
    import tempfile
    rng = random.Random(seed)
    offsets = sorted(rng.sample(range(1, 3600), n))
    kills = [[o, rng.choice(("cut", "end", "after")), rng.randint(0, 5)] for o in offsets]
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        plan, counts, report, runs, killed = kill_run(Path(d), 600, kills, seed)
        out = {"kill_points": n, "seed": seed, "kills_hit": killed, "host_runs": runs,
               **check_kill_run(plan, counts, report), "settled_chunks": report["settled_chunks"],
               "seconds": round(time.perf_counter() - t0, 1),
               "modes": dict(Counter(k[1] for k in kills))}
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    elif sys.argv[1] == "kill":
        kill_random(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 20)


def test_header_leaves_other_files(tmp_path):
    """The header is written through a fresh temporary name: a user's <journal>.tmp beside it is
    kept, nothing else is left (mutation: the old fixed name j.tmp -> that file replaced)."""
    from sw.journal import Journal
    (tmp_path / "j.tmp").write_text("mine")
    j = Journal.new(tmp_path / "j", config={"session": "program"})
    j.start("program", {"id": 1}, "h", {"chunk": 4}, 3)
    j.close()
    assert (tmp_path / "j.tmp").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j", "j.tmp"]
    assert Journal.load(tmp_path / "j").header["chunks"] == 3
