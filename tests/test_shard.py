"""Sharded co-simulation (tb/cosim/shard.py): the shard split, the merge of shard reports, and a
real dask.distributed LocalCluster (2 worker processes over TCP on localhost) whose merged report
equals the single-process session's on the same images."""
import json
import os
import random

import numpy as np
import pytest

from tb.cosim import shard


def test_shards_split():
    assert shard.shards(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard.shards(7, 2) == [(0, 4), (4, 7)]
    assert shard.shards(2, 5) == [(0, 1), (1, 2)]            # no empty shards
    assert shard.shards(1, 1) == [(0, 1)]
    rng = random.Random(3)
    for _ in range(200):
        n, k = rng.randint(1, 500), rng.randint(1, 40)
        parts = shard.shards(n, k)
        sizes = [b - a for a, b in parts]
        assert parts[0][0] == 0 and parts[-1][1] == n and len(parts) == min(n, k)
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:])) and max(sizes) - min(sizes) <= 1
    for n, k in ((0, 2), (5, 0)):
        with pytest.raises(ValueError):
            shard.shards(n, k)


def _fake(start, stop, correct, mism, span, req, bl, t, counters, act_bad=(), error=None):
    """A shard's report as sim_main writes it (the keys merge reads), with chosen figures."""
    n = stop - start
    r = {"images": n, "device": "ideal", "cycles_first_image": 30200 + start, "bound_cycles_per_image": 30000,
         "bound_per_layer": {"c1": 1}, "activity_equal_golden": not act_bad,
         "activity": {"images_equal_golden": n - len(act_bad),
                      "mismatches": [{"image": i, "keys": {"bl_pulses": [1, 2]}} for i in act_bad]},
         "counters": dict(counters),
         "shard": {"start": start, "stop": stop, "correct_rtl": correct, "correct_golden": correct + 1,
                   "mismatched": list(mism), "span_cycles": span, "intervals": n - 1, "req_cycles": req,
                   "activity_sums": {"c1": {"bl_pulses": bl, "pool_ops": 0.0}, "total": {"bl_pulses": bl,
                                                                                         "pool_ops": 0.0}},
                   "t_start": t[0], "t_end": t[1], "seconds_golden": 0.5 * n, "cpu_seconds": 0.25 * n,
                   "classes": list(range(start, stop)), "logits": [[i] * 10 for i in range(start, stop)]}}
    if error:
        r["error"] = error
    return r


@pytest.fixture(scope="module")
def w():
    from golden import weights
    return weights.load()


def test_merge_sums_and_global_indices(w):
    ca = {"slot_reads": 100, "adc_conversion_rounds": 7, "adc_conversions": 224, "lane_idle_cycles": 5, "overrun": 1,
          "set_pulses": 0, "reset_pulses": 0, "verify_reads": 0}
    cb = dict(ca, slot_reads=60, overrun=1)
    a = _fake(0, 5, correct=4, mism=[1], span=4 * 30000, req=[40, 8], bl=500.0, t=(10.0, 12.0), counters=ca)
    b = _fake(5, 8, correct=3, mism=[0, 2], span=2 * 30300, req=[20, 4], bl=301.0, t=(10.5, 14.0), counters=cb,
              act_bad=[1])
    for order in ([a, b], [b, a]):                 # completion order does not matter
        r = shard.merge(order, w, keep_results=True)
        assert r["images"] == 8 and r["workers"] == 2
        assert r["mismatched_indices"] == [1, 5, 7] and r["mismatched_images"] == 3 and r["bitexact_images"] == 5
        assert r["accuracy_rtl"] == 7 / 8 * 100 and r["accuracy_golden"] == 9 / 8 * 100
        assert r["stages"]["inference"]["bitexact_images"] == 5
        assert r["cycles_per_image"] == 30100.0         # (4 x 30000 + 2 x 30300) / 6 intervals
        assert r["cycles_first_image"] == 30200 and r["measured_over_bound"] == round(30100 / 30000, 4)
        assert r["cosim_images_per_s"] == 2.0              # 8 images from t 10.0 to 14.0
        assert r["golden_images_per_s"] == 2.0
        assert r["cosim_images_per_cpu_s"] == 4.0          # 8 images over 2 CPU seconds in all
        assert r["activity"]["per_image_mean"] == {"bl_pulses": round(801 / 8, 2)}   # zero sums left out
        assert r["activity"]["images_equal_golden"] == 7 and not r["activity_equal_golden"]
        assert r["activity"]["mismatches"][0]["image"] == 6
        assert r["counters"]["slot_reads"] == 160 and r["counters"]["overrun"] == 1
        assert r["counters"]["adc_conversions"] == 448
        assert r["latency"]["controller_cycles_by_converting_pes"][1:] == [7.5, 1.5]   # (40 + 20) / 8, (8 + 4) / 8
        assert r["results"]["classes"] == list(range(8)) and r["results"]["logits"][6] == [6] * 10
        assert [s["cosim_images_per_s"] for s in r["shards"]] == [2.5, round(3 / 3.5, 2)]
        assert [(s["inference_from_s"], s["inference_to_s"]) for s in r["shards"]] == [(0, 2), (0.5, 4)]
        assert "energy_pj_per_image" in r and "error" not in r


def test_merge_errors_and_gaps(w):
    c = {"slot_reads": 1, "overrun": 0}
    a = _fake(0, 2, 2, [], 30000, [1], 10.0, (0, 1), c)
    b = _fake(2, 4, 1, [1], 30000, [1], 10.0, (0, 1), c, error="AssertionError: 1 images differ")
    r = shard.merge([a, b], w)
    assert r["error"] == "images 2..3: AssertionError: 1 images differ" and "results" not in r
    with pytest.raises(ValueError, match="not contiguous"):
        shard.merge([a, _fake(3, 4, 1, [], 0, [1], 1.0, (0, 1), c)], w)
    with pytest.raises(ValueError, match="not contiguous"):
        shard.merge([b], w)


def test_sharded_equals_single_process(tmp_path, w):
    """2 Dask worker processes (LocalCluster, TCP) on 5 images = the single session on them."""
    from golden.datapath import Datapath
    from golden.idx import default_data_dir, load_dataset
    from golden.weights import DEFAULT_WEIGHTS
    from tb.cosim import sim_top
    n, data = 5, default_data_dir()
    rep = tmp_path / "single.json"
    sim_top.run(w, sim_top.session_params(DEFAULT_WEIGHTS, data, n, rep, progress=False, device="ideal"))
    single = json.loads(rep.read_text())
    r = shard.run(w, DEFAULT_WEIGHTS, data, n, workers=2, keep_results=True)
    assert [(s["start"], s["stop"]) for s in r["shards"]] == [(0, 3), (3, 5)]
    assert r["bitexact_images"] == n and "error" not in r
    timing = ("cosim_images_per_s", "cosim_images_per_cpu_s", "golden_images_per_s")
    assert {k: v for k, v in r.items() if k not in timing and k in single} == \
           {k: v for k, v in single.items() if k not in timing}
    # in image order, what the golden model gives (the sessions checked logits, p and delta)
    g = Datapath(w.int_w, w.q).run(load_dataset(data).test_images[:n])
    assert r["results"]["classes"] == g.classes.tolist()
    assert np.array_equal(r["results"]["logits"], g.logits)


@pytest.mark.skipif(not os.environ.get("MCNN_LONG_COSIM"), reason="about 4 min on 2 cores (two full transfers): "
                    "set MCNN_LONG_COSIM=1")
def test_sharded_device_equals_single_process(tmp_path, w):
    """A device preset (yao2020: transfer, 1 hybrid iteration) on 3 images: the stage session and
    2 inference shards on its boards (LocalCluster) = the single session, every key but the speeds."""
    from golden.idx import default_data_dir
    from golden.weights import DEFAULT_WEIGHTS
    from tb.cosim import sim_top
    n, data, kw = 3, default_data_dir(), dict(device="yao2020", seed=1, iterations=1, eta=0.05)
    rep = tmp_path / "single.json"
    sim_top.run(w, sim_top.session_params(DEFAULT_WEIGHTS, data, n, rep, progress=False, **kw))
    single = json.loads(rep.read_text())
    r = shard.run(w, DEFAULT_WEIGHTS, data, n, workers=2, **kw)
    assert [(s["start"], s["stop"]) for s in r["shards"]] == [(0, 2), (2, 3)] and "error" not in r
    assert r["bitexact_images"] == 2 * n and r["counters"]["counters_match_golden"]
    for rr in (r, single):
        rr["stages"]["transfer"].pop("seconds")
    timing = ("cosim_images_per_s", "cosim_images_per_cpu_s", "golden_images_per_s")
    assert {k: v for k, v in r.items() if k not in timing and k in single} == \
           {k: v for k, v in single.items() if k not in timing}


def test_cli_refuses(capsys, tmp_path):
    from sw.cli import main
    rep = tmp_path / "r.json"
    for opt in ("--replicated", "--waves"):
        assert main(["sim", "--n", "2", "--workers", "2", opt, "--report", str(rep)]) == 2
        assert f"{opt} needs --workers 1" in capsys.readouterr().err
    assert main(["sim", "--n", "2", "--device", "ideal", "--scheduler", "localhost:1", "--report", str(rep)]) == 2
    assert "expected tcp://HOST:PORT" in capsys.readouterr().err
    assert not rep.exists() and not list(tmp_path.iterdir())


def test_scheduler_without_workers(w):
    """A --scheduler with no worker connected is refused instead of waiting forever."""
    from distributed import LocalCluster

    from golden.fileio import InputError
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None) as lc:
        with pytest.raises(InputError, match="no workers connected"):
            shard.run(w, "weights/yao2020", "data/mnist", 2, scheduler=lc.scheduler_address)


def _stages(prog_equal=True):
    """The stage session's report of a staged run (transfer + 2 hybrid iterations), chosen figures."""
    p = {"set_pulses": 7, "reset_pulses": 11, "verify_reads": 40}
    return {"images": 1, "device": "yao2020", "stages": {
        "transfer": {"cells": 5712, "conductances_equal_golden": True},
        "hybrid": {"iterations": 2, "trace": [{"iteration": 1}, {"iteration": 2}]}},
        "activity_programming": {"transfer": {"rtl": p, "golden": p, "equal": True},
                                 "hybrid iteration 1": {"rtl": dict(p, set_pulses=3), "golden": dict(p, set_pulses=3),
                                                        "equal": prog_equal}},
        "counters": {"slot_reads": 1000, "adc_conversion_rounds": 9, "adc_conversions": 288, "lane_idle_cycles": 3,
                     "overrun": 0, "set_pulses": 10, "reset_pulses": 22, "verify_reads": 80, "golden_pulses": 32,
                     "golden_verify_reads": 80, "counters_match_golden": True}}


def test_merge_staged(w):
    """A device preset's run: stages and programming from the stage session, the two inferences
    (before and after the hybrid stage) from the shards, counters added over all sessions."""
    from golden.crossbar import Crossbar
    ca = {"slot_reads": 100, "adc_conversion_rounds": 7, "adc_conversions": 224, "lane_idle_cycles": 5, "overrun": 0,
          "set_pulses": 0, "reset_pulses": 0, "verify_reads": 0}
    a = _fake(0, 5, correct=4, mism=[], span=4 * 30000, req=[40, 8], bl=500.0, t=(10.0, 12.0), counters=ca)
    b = _fake(5, 8, correct=3, mism=[], span=2 * 30300, req=[20, 4], bl=301.0, t=(10.5, 14.0),
              counters=dict(ca, slot_reads=60, overrun=1))
    a["shard"]["after_hybrid"] = {"correct_rtl": 5, "correct_golden": 4, "mismatched": []}
    b["shard"]["after_hybrid"] = {"correct_rtl": 2, "correct_golden": 3, "mismatched": [1]}
    board = Crossbar("yao2020", seed=3)
    for order in ([a, b], [b, a]):
        r = shard.merge(order, w, stages=_stages(), board=board)
        assert list(r["stages"]) == ["transfer", "inference", "hybrid", "inference_after_hybrid"]
        assert r["stages"]["transfer"]["cells"] == 5712 and r["stages"]["hybrid"]["iterations"] == 2
        assert r["stages"]["inference_after_hybrid"] == {"accuracy_rtl": 7 / 8 * 100, "accuracy_golden": 7 / 8 * 100,
                                                         "bitexact_images": 7, "mismatched_images": 1}
        assert r["bitexact_images"] == 8 + 7 and r["mismatched_images"] == 1 and r["mismatched_indices"] == []
        assert r["stages"]["inference"]["bitexact_images"] == 8
        c = r["counters"]
        assert c["slot_reads"] == 1160 and c["adc_conversions"] == 736 and c["overrun"] == 1
        assert (c["set_pulses"], c["reset_pulses"], c["verify_reads"]) == (10, 22, 80)
        assert c["golden_pulses"] == 32 and c["counters_match_golden"] is True
        assert r["activity_equal_golden"] is True
        assert r["energy"]["energy_hybrid_iterations_pj"]["iterations"] == 1
        assert r["energy"]["energy_transfer_pj"]["total"] > 0
    r = shard.merge([a, b], w, stages=_stages(prog_equal=False), board=board)
    assert r["activity_equal_golden"] is False


def test_check_device(monkeypatch):
    """A preset with read noise is refused (one line); presets without it are sharded."""
    import dataclasses

    from golden import devices
    from golden.fileio import InputError
    for name in devices.PRESETS:
        if devices.PRESETS[name].read_noise_rel == 0:
            shard.check_device(name)
    monkeypatch.setitem(devices.PRESETS, "noisy", dataclasses.replace(devices.PRESETS["yao2020"], read_noise_rel=0.01))
    with pytest.raises(InputError, match="read noise .* needs --workers 1"):
        shard.check_device("noisy")
