"""golden/insitu_board.py (the board file of `mcnn train-insitu --save-board`): save/load round trip
against the trainer that was saved, overwrite refusal, bad files (one-line InputError each), the
--save-board hook of the experiment and the CLI's refusals of `mcnn sim --board`."""
import json
from dataclasses import replace

import numpy as np
import pytest

from golden import insitu
from golden.crossbar import Crossbar
from golden.fileio import InputError, OutputExists
from golden.hybrid import batch_order
from golden.idx import default_data_dir, load_dataset
from golden.insitu_board import load_board, save_board
from golden.networks import network

NET = network("li2018")


@pytest.fixture(scope="module")
def data():
    ds = load_dataset(default_data_dir())
    x = insitu.flat_inputs(NET, ds.train_images[:1500])
    return x, ds.train_labels[:1500].astype(np.int64), ds


def trained(data, mode="open", batches=6, seed=5):
    x, y, _ = data
    t = insitu.InsituTrainer(Crossbar("li2018", seed=seed, n_pe=4), NET, insitu.InsituConfig(eta=0.08, mode=mode))
    insitu.train(t, x, y, batch_order(1000, 100, batches, seed=1))
    return t


@pytest.fixture(scope="module")
def board(data, tmp_path_factory):
    t = trained(data)
    f = tmp_path_factory.mktemp("board") / "b.npz"
    save_board(t, f, info={"note": "test"})
    return t, f


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_round_trip_forward_and_further_training(data, tmp_path, mode):
    x, y, _ = data
    t = trained(data, mode)
    fresh = Crossbar("li2018", seed=5, n_pe=4)
    assert not np.array_equal(t.xb.g, fresh.g)              # the state saved is the trained one
    want = t.logits(x[1000:1500])
    f = save_board(t, tmp_path / "b.npz", info={"accuracy": 12.5})
    u = load_board(f)
    assert np.array_equal(u.logits(x[1000:1500]), want)
    assert np.array_equal(u.xb.g, t.xb.g) and np.array_equal(u.xb.stuck, t.xb.stuck)
    assert (u.it, u.cfg, u.th, u.xb.p, u.xb.shape, u.board_info) == (t.it, t.cfg, t.th, t.xb.p, t.xb.shape,
                                                                     {"accuracy": 12.5})
    assert u.prog.blocked == t.prog.blocked and u.prog.stats == t.prog.stats
    if mode == "closed":
        assert t.prog.blocked                                   # stuck cells failed and were blocked
    assert [u.xb._normal() for _ in range(40000)] == [t.xb._normal() for _ in range(40000)]   # past the buffer
    assert u.xb._read_rng.random() == t.xb._read_rng.random()
    for ix in batch_order(1000, 100, 2, seed=9):                # the random streams continue as saved
        t.step(x[ix], y[ix])
        u.step(x[ix], y[ix])
    assert np.array_equal(u.xb.g, t.xb.g) and u.xb.counters == t.xb.counters


def test_the_file_keeps_the_device_parameters(data, tmp_path):
    """A board of a non-preset parameter set (overrides) rebuilds with those parameters; with read
    noise, the reads go on drawing where the saved board's stream was."""
    x = data[0][:200]
    t = insitu.InsituTrainer(Crossbar("li2018", seed=2, n_pe=4, p_stuck_off=0.3, read_noise_rel=0.02), NET,
                             insitu.InsituConfig(eta=0.05, hidden_shift=4))
    first = t.logits(x)                        # draws read noise: the stream moves on
    u = load_board(save_board(t, tmp_path / "b.npz"))
    assert u.xb.p.p_stuck_off == 0.3 and u.xb.p.read_noise_rel == 0.02 and u.cfg.hidden_shift == 4
    second = t.logits(x)
    assert np.array_equal(u.logits(x), second) and not np.array_equal(first, second)


def test_overwrite_only_with_force(board, tmp_path):
    t, _ = board
    f = tmp_path / "b.npz"
    f.write_bytes(b"keep")
    with pytest.raises(OutputExists, match="--force"):
        save_board(t, f)
    assert f.read_bytes() == b"keep"
    save_board(t, f, force=True)
    assert np.array_equal(load_board(f).xb.g, t.xb.g)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz"]      # no temporary left


def _contents(f):
    with np.load(f) as z:
        d = {k: z[k] for k in z.files}
    return json.loads(str(d.pop("meta"))), d


def _write(path, meta, arrays):
    np.savez(path, **({} if meta is None else {"meta": np.array(json.dumps(meta))}), **arrays)


def _edit(meta=None, arrays=None):
    """A bad file: the good one's meta / arrays changed by these functions."""
    def make(good, path):
        m, a = _contents(good)
        if meta:
            meta(m)
        if arrays:
            arrays(a)
        _write(path, m, a)
    return make


BAD = {   # what is wrong: (how the file is made from the good one, what the message says)
    "missing": (lambda good, p: None, "no such board file"),
    "directory": (lambda good, p: p.mkdir(), "is a directory"),
    "text": (lambda good, p: p.write_text("hello"), "not a board file"),
    "truncated": (lambda good, p: p.write_bytes(good.read_bytes()[:3000]), "not a board file"),
    "no meta": (lambda good, p: _write(p, None, _contents(good)[1]), "no meta"),
    "format": (_edit(meta=lambda m: m.update(format="other")), "(format)"),
    "version": (_edit(meta=lambda m: m.update(version=2)), "version 2"),
    "no g": (_edit(arrays=lambda a: a.pop("g")), "lacks g"),
    "g shape": (_edit(arrays=lambda a: a.update(g=a["g"][:2])), "array g is float64[2, 128, 16]"),
    "stuck dtype": (_edit(arrays=lambda a: a.update(stuck=a["stuck"].astype(np.float64))), "array stuck is float64"),
    "nan": (_edit(arrays=lambda a: a["g"].__setitem__((0, 0, 0), np.nan)), "non-finite"),
    "network": (_edit(meta=lambda m: m.update(network="lenet")), "network 'lenet'"),
    "no rng": (_edit(meta=lambda m: m.pop("rng_prog")), "malformed"),
    "config": (_edit(meta=lambda m: m["config"].update(bogus=1)), "bogus"),
    "device": (_edit(meta=lambda m: m["device_params"].update(g_lo_us=30.0)), "device parameters"),
    "softmax": (_edit(meta=lambda m: m.update(softmax=[1, 2])), "derives softmax"),
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_files_are_one_line_input_errors(board, tmp_path, what):
    _, good = board
    p = tmp_path / "bad.npz"
    make, says = BAD[what]
    make(good, p)
    with pytest.raises(InputError) as e:
        load_board(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and "\n" not in msg and says in msg, msg


def test_experiment_hands_fig4a_first_run_to_on_board(data):
    """--save-board's hook: called once, with Fig. 4a's run on the preset's board (not the
    defect-free one), whose accuracy is that trainer's test accuracy."""
    from golden import insitu_run
    _, _, ds = data
    small = replace(ds, train_images=ds.train_images[:800], train_labels=ds.train_labels[:800],
                    test_images=ds.test_images[:300], test_labels=ds.test_labels[:300])
    seen = []
    rep = insitu_run.experiment(small, "li2018", seeds=(3, 4), parts=("fig4a",), log=lambda s: None,
                                on_board=lambda t, run: seen.append((t, run)))
    assert len(seen) == 1
    t, run = seen[0]
    xt = insitu.flat_inputs(NET, small.test_images)
    assert run["seed"] == 3 and t.xb.seed == 3 and t.xb.p.p_stuck_off == 0.11 and (t.xb.stuck == 2).any()
    assert run["accuracy"] == 100.0 - t.error(xt, small.test_labels) == rep["fig4a"]["open"]["runs"][0]["accuracy"]


def test_cli_refusals(board, tmp_path, capsys):
    from sw.cli import main
    _, f = board
    rep = tmp_path / "r.json"
    assert main(["sim", "--network", "yao2020", "--board", str(f), "--n", "4", "--report", str(rep)]) == 2
    assert "give --network li2018" in capsys.readouterr().err
    assert main(["sim", "--network", "li2018", "--board", str(tmp_path / "no.npz"), "--report", str(rep)]) == 2
    assert "no such board file" in capsys.readouterr().err
    rep.write_text("old")
    assert main(["sim", "--network", "li2018", "--board", str(f), "--n", "4", "--report", str(rep)]) == 2
    assert "exists" in capsys.readouterr().err and rep.read_text() == "old"
    out = tmp_path / "run"
    nodata = ["--data", str(tmp_path / "nodata")]          # the refusal comes before the data is read
    assert main(["train-insitu", "--out", str(out), "--save-board", str(f), *nodata]) == 2
    assert "exists" in capsys.readouterr().err and not out.exists()
    assert main(["train-insitu", "--out", str(out), "--parts", "fig4b", "--save-board", str(tmp_path / "n.npz"),
                 *nodata]) == 2
    assert "--parts fig4a" in capsys.readouterr().err


def test_shard_reports_merge():
    """tb/cosim/board_main.merge: counts add up, indices stay global, rates come from the sums."""
    from tb.cosim.board_main import merge

    def shard(lo, hi, correct, bad, span, t0, t1):
        return {"network": "li2018", "shard": {"start": lo, "stop": hi}, "images": hi - lo, "correct_rtl": correct,
                "correct_golden": correct, "bitexact_images": hi - lo - len(bad), "mismatched_images": len(bad),
                "mismatched_indices": bad, "span_cycles": span, "intervals": hi - lo - 1, "cycles_first_image": 190,
                "seconds_golden": 0.5, "seconds_cosim": t1 - t0, "t_start": t0, "t_end": t1, "overrun": 0}
    r = merge([shard(30, 100, 60, [41], 69 * 210, 5.0, 12.0), shard(0, 30, 27, [], 29 * 200, 2.0, 4.0)])
    assert (r["images"], r["correct_rtl"], r["bitexact_images"], r["mismatched_indices"]) == (100, 87, 99, [41])
    assert r["accuracy_rtl"] == 87.0 and r["cycles_per_image"] == round((69 * 210 + 29 * 200) / 98, 2)
    assert r["cosim_images_per_s"] == 10.0 and r["golden_images_per_s"] == 100.0
    assert [s["start"] for s in r["shards"]] == [0, 30] and "shard" not in r and "error" not in r
    r = merge([shard(0, 10, 9, [], 9 * 200, 0.0, 1.0) | {"error": "boom"}, shard(10, 20, 9, [], 9 * 200, 0.0, 1.0)])
    assert r["error"] == "images 0..9: boom"
