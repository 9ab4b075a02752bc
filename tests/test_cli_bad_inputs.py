"""Bad inputs to `mcnn`, table-driven: every case exits with code 2 and a one-line error naming the
argument, file or field, no traceback, and nothing in the case's directory (nor the committed
weights) is created, changed or deleted. The CLI runs in-process (sw.cli.main); no case builds or
runs a co-simulation (the output and input checks come first).
"""
import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golden.fileio import OutputExists
from golden.weights import DEFAULT_WEIGHTS
from sw.cli import main

WEIGHTS = [Path(f"{DEFAULT_WEIGHTS}.npz"), Path(f"{DEFAULT_WEIGHTS}.json")]
NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def idx(arr: np.ndarray) -> bytes:
    """Independent IDX writer (unsigned bytes): 00 00 08 <ndim>, big-endian u32 dims, data."""
    return bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + \
        arr.astype(np.uint8).tobytes()


def dataset(d: Path, n_train=20, n_test=10, hw=(28, 28), label_max=9, **override) -> Path:
    """A small MNIST-shaped dataset in d (gzipped IDX); `override` replaces arrays by key."""
    rng = np.random.default_rng(3)
    arrs = {"train_images": rng.integers(0, 256, (n_train, *hw)),
            "train_labels": rng.integers(0, label_max + 1, n_train),
            "test_images": rng.integers(0, 256, (n_test, *hw)),
            "test_labels": rng.integers(0, label_max + 1, n_test)}
    arrs.update(override)
    d.mkdir(parents=True, exist_ok=True)
    for k, a in arrs.items():
        (d / (NAMES[k] + ".gz")).write_bytes(gzip.compress(idx(np.asarray(a))))
    return d


def weights_copy(d: Path, stem="w", edit=None) -> Path:
    """The committed weights copied to d/<stem>.{npz,json}; edit(doc) changes the JSON."""
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(WEIGHTS[0], d / f"{stem}.npz")
    doc = json.loads(WEIGHTS[1].read_text())
    if edit:
        edit(doc)
    (d / f"{stem}.json").write_text(json.dumps(doc))
    return d / stem


def npz_edit(stem: Path, key, arr) -> list:
    """<stem>.npz with array `key` replaced; -> the argv of `mcnn eval` on it."""
    arrs = dict(np.load(f"{stem}.npz"))
    arrs[key] = arr
    np.savez(f"{stem}.npz", **arrs)
    return ["eval", "--weights", str(stem)]


def resume(d: Path, *records, config=(("session", "program"), ("cells", [[0, 0, 0, 5]]))) -> list:
    """d/j.jsonl: a journal header (config: dict items, or anything else as is; None: no config)
    and `records`; -> the argv resuming it on /dev/null (not a serial port: opening it fails)."""
    head = {"format": "mcnn-journal", "version": 1, "session": "program"}
    if config is not None:
        head["config"] = dict(config) if isinstance(config, tuple) else config
    (d / "j.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (head, *records)))
    return ["board", "--port", "/dev/null", "--resume", str(d / "j.jsonl")]


def setq(path, value):
    """JSON edit: doc[path...] = value (path: keys separated by dots)."""
    def f(doc):
        *head, last = path.split(".")
        for k in head:
            doc = doc[k]
        doc[last] = value
    return f


# (id, setup(tmp) -> argv, expected text in the error). The mutation each case was seen to catch
# is noted where it is not the argument's own range (removing any range makes its case fail).
CASES = [
    # ranges of numeric arguments (argparse types, sw/argtypes.py)
    ("n-negative", lambda t: ["eval", "--n", "-5"], "argument --n: expected an integer in 1..10000, got '-5'"),
    ("n-zero", lambda t: ["eval", "--n", "0"], "argument --n"),
    ("n-not-int", lambda t: ["eval", "--n", "ten"], "argument --n"),
    ("sim-n-negative", lambda t: ["sim", "--n", "-198"], "argument --n"),
    ("n-train-zero", lambda t: ["eval", "--stages", "all", "--n-train", "0"], "argument --n-train"),
    ("seeds-zero", lambda t: ["eval", "--stages", "all", "--seeds", "0"], "argument --seeds"),
    ("eta-nan", lambda t: ["eval", "--eta", "nan"], "argument --eta: expected a number > 0"),
    ("eta-negative", lambda t: ["eval", "--rep-eta", "-1"], "argument --rep-eta"),
    ("read-noise-negative", lambda t: ["eval", "--read-noise", "-0.1"], "argument --read-noise"),
    ("age-inf", lambda t: ["eval", "--age-hours", "inf"], "argument --age-hours"),
    ("adc-bits", lambda t: ["eval", "--adc-bits", "17"], "argument --adc-bits"),
    ("jobs-zero", lambda t: ["eval", "--jobs", "0"], "argument --jobs"),
    ("rep-clip-negative", lambda t: ["eval", "--rep-clip", "-1"], "argument --rep-clip"),
    ("device-unknown", lambda t: ["eval", "--device", "nope"], "argument --device: invalid choice"),
    ("sim-iterations-negative", lambda t: ["sim", "--iterations", "-1"], "argument --iterations"),
    ("sim-seed-negative", lambda t: ["sim", "--seed", "-1"], "argument --seed"),
    ("bench-n-zero", lambda t: ["bench", "--n", "0"], "argument --n"),
    ("bench-cosim-negative", lambda t: ["bench", "--cosim-n", "-1"], "argument --cosim-n"),
    ("train-epochs-zero", lambda t: ["train", "--epochs", "0"], "--epochs 0: no float training to start from"),
    ("board-frames-zero", lambda t: ["board", "--sim", "faults", "--frames", "0"], "argument --frames"),
    ("board-rate", lambda t: ["board", "--sim", "faults", "--rate", "1.5"], "argument --rate"),
    ("board-retries", lambda t: ["board", "--sim", "faults", "--retries", "-1"], "argument --retries"),
    ("board-timeout", lambda t: ["board", "--sim", "faults", "--timeout", "0"], "argument --timeout"),
    # (mutation: no upper bounds -> accepted; --timeout 1e10 on a serial port (a pty) then ended in an
    # OverflowError traceback from select())
    ("board-timeout-huge", lambda t: ["board", "--port", "/dev/null", "--timeout", "1e10"],
     "argument --timeout: expected a number > 0 and <= 3600, got '1e10'"),
    ("board-deadline-huge", lambda t: ["board", "--sim", "faults", "--deadline", "1e300"], "argument --deadline"),
    ("board-hang-max-huge", lambda t: ["board", "--sim", "faults", "--hang-max", "1e300"], "argument --hang-max"),
    # --eta that the update engine cannot hold, refused before the port opens (mutation: no _check_eta ->
    # the session starts; on a board Board.set_learning then raised a ValueError traceback)
    ("board-eta-tiny", lambda t: ["board", "--port", "/dev/null", "--session", "train", "--eta", "1e-12"],
     "--eta 1e-12: not representable by the update engine: ctrl_eta_sh = 69 does not fit 6 bits"),
    ("board-eta-underflow", lambda t: ["board", "--port", "/dev/null", "--session", "train", "--eta", "1e-300"],
     "--eta 1e-300: not representable"),
    ("board-eta-huge", lambda t: ["board", "--port", "/dev/null", "--session", "train", "--eta", "1e9"],
     "--eta 1e+09: not representable by the update engine: requant ratio"),
    ("board-images", lambda t: ["board", "--sim", "infer", "--images", "0"], "argument --images"),
    ("board-baud", lambda t: ["board", "--port", "/dev/null", "--baud", "0"], "argument --baud"),
    # cells checked against the array before any co-simulation (mutation: no range check -> session built)
    ("cells-pe", lambda t: ["board", "--sim", "program", "--device", "controller", "--cells", "8,0,0,5"],
     "--cells: cell '8,0,0,5': pe 8 outside 0..7"),
    ("cells-row", lambda t: ["board", "--sim", "read", "--device", "controller", "--cells", "0,128,0"],
     "row 128 outside 0..127"),
    ("cells-target", lambda t: ["board", "--sim", "program", "--device", "controller", "--cells", "0,0,0,300"],
     "target 300 outside 0..255"),
    ("cells-missing-target", lambda t: ["board", "--sim", "program", "--device", "controller", "--cells", "0,0,0"],
     "expected integers pe,row,bl,target"),
    ("cells-not-int", lambda t: ["board", "--sim", "read", "--device", "controller", "--cells", "0,x,0"],
     "expected integers pe,row,bl"),
    ("needs-controller", lambda t: ["board", "--sim", "counters"], "needs the controller"),
    # outputs never overwritten without --force (mutation: check_outputs skipped -> file replaced)
    # (train cases get a tiny dataset: a check that fails lets training stop at once, not run for minutes)
    ("train-default-out", lambda t: ["train", "--epochs", "1", "--data", str(dataset(t / "d"))],
     "yao2020.npz: exists, not overwritten"),
    ("train-dotted-out-exists",
     lambda t: ["train", "--epochs", "1", "--out", str(weights_copy(t, "model.v2")), "--data", str(dataset(t / "d"))],
     "model.v2.npz: exists"),
    ("sim-report-exists", lambda t: (t / "r.json").write_text("{}") and ["sim", "--report", str(t / "r.json")],
     "r.json: exists, not overwritten (pass --force"),
    # (mutation: the report checked after the --waves warning -> two lines on stderr)
    ("sim-waves-report-exists", lambda t: (t / "r.json").write_text("{}") and
     ["sim", "--waves", "--n", "20", "--report", str(t / "r.json")], "r.json: exists, not overwritten"),
    ("sim-waves-weights-missing", lambda t: ["sim", "--waves", "--n", "20", "--weights", str(t / "none"),
                                             "--report", str(t / "r.json")], "none.npz: missing"),
    # (mutation: no regular-file check in check_outputs -> with --force the FIFO is checked as writable and
    # write_atomic replaces it: `mcnn sim --report /dev/null --force` would replace the device node, as root;
    # no case here tries /dev/null itself: with the check gone it would)
    ("train-out-fifo-force", lambda t: os.mkfifo(t / "w.npz") or
     ["train", "--out", str(t / "w"), "--force", "--data", str(dataset(t / "d"))], "w.npz: not a regular file"),
    ("sim-report-dir", lambda t: ["sim", "--report", str(t)], "is a directory"),
    ("sim-report-under-file", lambda t: (t / "f").write_text("x") and ["sim", "--report", str(t / "f" / "r.json")],
     "is not a directory"),
    ("sim-replicated-ideal", lambda t: ["sim", "--replicated", "--device", "ideal", "--report", str(t / "new.json")],
     "--replicated needs a device preset"),
    ("plots-exist", lambda t: (t / "error_vs_iteration.png").write_bytes(b"png") and
     ["eval", "--stages", "all", "--plots", str(t)], "error_vs_iteration.png: exists"),
    # stems keep their dots (mutation: Path.with_suffix -> reads d/model.npz, exit 0)
    ("dotted-stem-read", lambda t: weights_copy(t, "model") and ["eval", "--n", "5", "--weights", str(t / "model.v2")],
     "model.v2.npz: missing"),
    # a stem that names no file (mutation: no check in with_suffix_kept -> ValueError traceback)
    ("weights-empty-stem", lambda t: ["eval", "--n", "5", "--weights", ""], "'.': expected a file stem"),
    ("weights-root-stem", lambda t: ["eval", "--n", "5", "--weights", "/"], "'/': expected a file stem"),
    ("train-out-dotdot", lambda t: ["train", "--out", str(t / ".."), "--data", str(dataset(t / "d"))],
     "expected a file stem"),
    # weights checked semantically (mutations: no finiteness / sign / type checks -> load or traceback)
    ("scale-nan", lambda t: ["eval", "--weights", str(weights_copy(t, edit=setq("quant.w_scale.C1", float("nan"))))],
     "field 'quant.w_scale.C1' is nan, expected a finite number > 0"),
    ("scale-negative", lambda t: ["eval", "--weights", str(weights_copy(t, edit=setq("quant.w_scale.FC", -0.1)))],
     "quant.w_scale.FC"),
    ("scale-string", lambda t: ["eval", "--weights", str(weights_copy(t, edit=setq("quant.logit_scale", "1")))],
     "quant.logit_scale"),
    ("w-scale-list", lambda t: ["eval", "--weights", str(weights_copy(t, edit=setq("quant.w_scale", [1, 2])))],
     "field 'quant.w_scale' is [1, 2]"),
    ("requant-type", lambda t: ["eval", "--weights", str(weights_copy(t, edit=setq("quant.requant.C1", "x")))],
     "quant.requant.C1"),
    ("requant-float", lambda t: ["eval", "--weights", str(weights_copy(t, edit=setq("quant.requant.C3", [1.5, 3])))],
     "quant.requant.C3[0]"),
    ("quant-missing", lambda t: ["eval", "--weights", str(weights_copy(t, edit=lambda d: d.pop("quant")))],
     "field 'quant' is NoneType"),
    # (mutations: no overflow guard / ValueError not caught / no dtype check -> traceback or a silent load)
    ("scale-huge-int", lambda t: ["eval", "--weights", str(weights_copy(t, edit=setq("quant.w_scale.C3", 10**400)))],
     "field 'quant.w_scale.C3' is an integer of 401 digits"),
    ("json-too-many-digits", lambda t: weights_copy(t) and (t / "w.json").write_text('{"format": ' + "9" * 5000 + "}")
     and ["eval", "--weights", str(t / "w")], "w.json: not valid JSON: Exceeds the limit"),
    ("json-deep-nesting", lambda t: weights_copy(t) and (t / "w.json").write_text("[" * 100_000 + "]" * 100_000)
     and ["eval", "--weights", str(t / "w")], "w.json: not valid JSON: maximum recursion depth"),
    ("npz-string-array", lambda t: npz_edit(weights_copy(t), "float/C1", np.full((8, 1, 3, 3), "a")),
     "array 'float/C1' holds <U1 values, expected real numbers"),
    ("npz-complex-array", lambda t: npz_edit(weights_copy(t), "float/FC", np.zeros((192, 10), complex)),
     "array 'float/FC' holds complex128 values"),
    ("meta-type", lambda t: ["eval", "--weights", str(weights_copy(t, edit=setq("meta", "x")))], "field 'meta'"),
    ("doc-list", lambda t: weights_copy(t) and (t / "w.json").write_text("[]") and
     ["eval", "--weights", str(t / "w")], "a JSON list, expected an object"),
    ("weights-dir", lambda t: (t / "w.npz").mkdir() or (t / "w.json").mkdir() or ["eval", "--weights", str(t / "w")],
     "w.npz: missing"),
    # datasets checked against the network (mutation: no label / size check -> silent accuracy or traceback)
    ("label-range", lambda t: ["eval", "--data", str(dataset(t / "d", test_labels=np.array([1] * 9 + [10])))],
     "t10k-labels-idx1-ubyte.gz: label 10 at index 9, expected labels 0..9"),
    ("image-size", lambda t: ["eval", "--data", str(dataset(t / "d", hw=(14, 14)))],
     "images of 14x14 pixels, the network takes 28x28"),
    ("no-test-images", lambda t: ["eval", "--data", str(dataset(t / "d", n_test=0))], "0 images, expected at least 1"),
    ("n-beyond-dataset", lambda t: ["sim", "--n", "20", "--data", str(dataset(t / "d"))],
     "--n 20: the dataset in"),
    ("n-train-beyond-dataset",
     lambda t: ["eval", "--stages", "all", "--n-train", "50", "--data", str(dataset(t / "d"))], "--n-train 50"),
    ("train-small-dataset", lambda t: ["train", "--out", str(t / "new"), "--data", str(dataset(t / "d"))],
     "20 training images; training takes the first n_train=10 (at least a batch of 64)"),
    ("labels-count", lambda t: ["eval", "--data", str(dataset(t / "d", train_labels=np.zeros(19)))], "19 labels"),
    ("gzip-corrupt", lambda t: dataset(t / "d") and (t / "d" / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bxx")
     and ["eval", "--data", str(t / "d")], "corrupt gzip stream"),
    ("data-missing", lambda t: ["eval", "--data", str(t / "none")], "not a directory"),
    # a corrupt journal refused before the port is opened (mutations: no record / config checks in
    # Journal.load, no session check in board._session_config -> KeyError/ValueError traceback, or the port opened)
    ("resume-record-no-chunk", lambda t: resume(t, {"k": "sent"}), "line 2: malformed record"),
    ("resume-record-list-chunk", lambda t: resume(t, {"k": "done", "chunk": [0], "status": 0, "answers": []}),
     "line 2: malformed record"),
    ("resume-frame-not-hex", lambda t: resume(t, {"k": "sent", "chunk": 0, "seq": 1, "frame": "zz"}),
     "line 2: malformed record"),
    ("resume-answers-text", lambda t: resume(t, {"k": "done", "chunk": 0, "status": 0, "answers": ["1"]}),
     "line 2: malformed record"),
    ("resume-note-no-value", lambda t: resume(t, {"k": "note", "key": "x"}), "line 2: malformed record"),
    ("resume-config-text", lambda t: resume(t, config="x"), "line 1: 'config' is 'x', expected an object"),
    ("resume-config-read", lambda t: resume(t, config={"session": "read", "cells": [[0, 0, 0]]}),
     "names no program or train session (session 'read')"),
    ("resume-no-config", lambda t: resume(t, config=None), "names no program or train session (session None)"),
    # (mutation: no type on --port -> exit 0, the simulated device's status printed)
    ("board-port-empty", lambda t: ["board", "--port", ""], "argument --port: expected a serial port"),
    ("board-port-blank", lambda t: ["board", "--port", " ", "--session", "status"], "argument --port"),
    # (mutation: no regular-file check in Journal.new -> with --force the journal's header would replace it)
    ("journal-fifo-force", lambda t: os.mkfifo(t / "j") or ["board", "--port", "/dev/null", "--session", "program",
                                                           "--cells", "0,0,0,5", "--journal", str(t / "j"), "--force"],
     "j: not a regular file"),
    ("board-no-port", lambda t: ["board", "--port", str(t / "no-such-port")], "no-such-port"),
]


def snapshot(d: Path) -> dict:
    """Every file under d and the committed weights: bytes and modification time."""
    files = [*d.rglob("*"), *WEIGHTS]
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in files if p.is_file()} | \
        {str(p): "dir" for p in d.rglob("*") if p.is_dir()}


def check_refused(rc, capsys, expected):
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mcnn ") and ": error: " in lines[0], err
    assert "Traceback" not in err + out
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, capsys):
    _, setup, expected = case
    argv = setup(tmp_path)
    before = snapshot(tmp_path)
    check_refused(main(argv), capsys, expected)
    assert snapshot(tmp_path) == before, "a file was created, changed or deleted"


def test_valid_inputs_accepted(tmp_path, capsys):
    """The cases' fixtures are sound: the small dataset and a dotted copy of the weights run."""
    stem = weights_copy(tmp_path, "model.v2")
    assert main(["eval", "--n", "10", "--json", "--data", str(dataset(tmp_path / "d")), "--weights", str(stem)]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 10


def test_serial_port_unplugged(monkeypatch, capsys):
    """termios.error (not an OSError) from a port that went away: one line naming the port."""
    termios = pytest.importorskip("termios")
    import sw.transport

    class Unplugged:
        def __init__(self, port, baud):
            pass

        def write(self, data):
            raise termios.error(5, "Input/output error")

        def read(self, timeout):
            return b""

        def close(self):
            pass
    monkeypatch.setattr(sw.transport, "SerialTransport", Unplugged)
    check_refused(main(["board", "--port", "/dev/ttyUSB9"]), capsys, "/dev/ttyUSB9: Input/output error")


def test_controller_session_failure(monkeypatch, tmp_path, capsys):
    """A co-simulated controller session that ends in an exception: one line with that exception
    and the log (mutation: no AssertionError handling in commands.board -> traceback)."""
    import tb.cosim.host_cosim as hc
    log = tmp_path / "test.log"
    log.write_text("  Traceback (most recent call last):\n    ...\n"
                   "  sw.link.LinkTimeout: no answer to PROGRAM after 6 attempts\n  ** TESTS=1 FAIL=1 **\n")

    def failed(*a, **k):
        raise AssertionError(f"1 of 1 cocotb tests failed for mcnn_host: see {log}")
    monkeypatch.setattr(hc, "run_host_session", failed)
    check_refused(main(["board", "--sim", "program", "--device", "controller", "--cells", "0,0,0,5"]), capsys,
                  "sw.link.LinkTimeout: no answer to PROGRAM after 6 attempts")


def test_real_bug_keeps_traceback(monkeypatch):
    """Only input errors are turned into one line: a bug (here a ZeroDivisionError) still raises."""
    import golden.evaluate
    monkeypatch.setattr(golden.evaluate, "evaluate", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["eval", "--n", "5"])


def test_dotted_stem_save_and_load(tmp_path):
    """Weights.save and load keep the stem's dots; an existing pair is replaced only with force."""
    from golden import weights
    w = weights.load()
    (tmp_path / "model.npz").write_bytes(b"other")
    npz, js = w.save(tmp_path / "model.v2")
    assert (npz.name, js.name) == ("model.v2.npz", "model.v2.json")
    assert (tmp_path / "model.npz").read_bytes() == b"other"
    assert weights.load(tmp_path / "model.v2").q == w.q
    with pytest.raises(OutputExists, match="model.v2.npz: exists"):
        w.save(tmp_path / "model.v2")
    w.save(tmp_path / "model.v2", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "model.v2.json", "model.v2.npz"]


def test_console_entry_no_traceback():
    """The real entry point (a fresh interpreter): one line, exit 2."""
    r = subprocess.run([sys.executable, "-m", "sw.cli", "sim", "--n", "-198"], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "mcnn sim: error: argument --n: expected an integer in 1..10000, got '-198' " \
                               "(see mcnn sim --help)"


@pytest.mark.parametrize("session,n,expected", [("infer", 11, "10 test images, the infer session takes 11 (--images)"),
                                                ("train", 11, "10 training images, the train session takes 11 "
                                                              "(--images)")])
def test_board_session_dataset_too_small(tmp_path, session, n, expected):
    """A board's infer/train session on a dataset ($MCNN_DATA) too small for it: an InputError
    before anything is sent (mutation: no size check -> infer ran on 10 images, train an IndexError)."""
    from golden.fileio import InputError
    from sw.board import host_session

    class NoDevice:
        def __getattr__(self, name):
            raise AssertionError(f"the device was used: {name}")
    cfg = {"session": session, "n": n, "data": dataset(tmp_path / "d"), "seed": 0}
    with pytest.raises(InputError, match=re.escape(expected)):
        host_session(NoDevice(), cfg)
