"""Co-simulation of the replicated-convolver controller (rtl/replicated.py, tb/cosim/replicated_main.py)
on a yao2020 device board whose three conv groups hold different cells: replicated inference
(every image bit-exact with its group's golden datapath, results in image order), the result
spacing against the single-group pipeline (route = G1), a short replicated training run bit-exact
with golden.hybrid (two rounds with one update per round of three batches, then three per-batch
updates, one per group; no update clipping), and inference after it."""
import json


def test_replicated(tmp_path):
    from golden import weights
    from golden.idx import default_data_dir
    from golden.weights import DEFAULT_WEIGHTS
    from tb.cosim.replicated_cosim import run
    from tb.cosim.sim_top import session_params
    rep = tmp_path / "report.json"
    run(weights.load(), session_params(DEFAULT_WEIGHTS, default_data_dir(), 12, rep, device="yao2020", seed=3,
                                       single=3, rounds=2, batch=4, eta=0.3, batch_steps=3))
    r = json.loads(rep.read_text())
    assert "error" not in r, r.get("error")
    inf = r["stages"]["inference"]
    assert inf["mismatched_images"] == 0 and inf["bitexact_images"] == 12 and inf["wrong_group_tags"] == 0
    assert inf["images_distinct_between_groups"] >= 6     # the groups' cells really differ
    assert r["stages"]["single_group"]["mismatched_images"] == 0
    assert r["replicated_over_single"] <= 0.36            # three images in flight: ~1/3 of the spacing
    assert inf["overrun"] == 0
    tr = r["stages"]["training"]["trace"]
    assert all(e["conductances_equal_golden"] and e["forward_mismatches"] == 0 for e in tr)
    assert sum(e["cells_programmed"] for e in tr) > 0
    assert tr[0]["max_abs_update"] > 30 and tr[0]["commands_golden"] > 0   # the clipping (30 codes) was engaged
    bt = r["stages"]["training_per_batch"]["trace"]
    assert [e["group"] for e in bt] == ["G1", "G2", "G3"]
    assert all(e["conductances_equal_golden"] and e["forward_mismatches"] == 0 for e in bt)
    assert r["stages"]["inference_after_training"]["mismatched_images"] == 0
