"""End-to-end co-simulation of the controller on 8 behavioural PEs (tb/cosim/sim_main.py), bit-exact
against the golden model: inference on ideal cells (yao2020, and li2018's MLP); then, on a yao2020
board, the weight transfer through the RTL write-verify sequencer, inference, hybrid-training
iterations in fabric (update engine, threshold rule, pair programmer) and inference again, every
stage compared with golden."""
import json

import pytest


def _run(tmp_path, n, network="yao2020", **params):
    from golden import weights
    from golden.idx import default_data_dir
    from tb.cosim.sim_top import run, session_params
    rep = tmp_path / "report.json"
    stem = weights.default_weights(network)
    params = dict(params, network=network) if network != "yao2020" else params
    run(weights.load(stem, network), session_params(stem, default_data_dir(), n, rep, progress=False, **params))
    return json.loads(rep.read_text())


def test_inference_ideal(tmp_path):
    r = _run(tmp_path, n=12, device="ideal")
    assert r["mismatched_images"] == 0 and r["bitexact_images"] == 12
    assert r["measured_over_bound"] <= 1.10
    assert r["counters"]["overrun"] == 0
    # the RTL's activity counters equal golden.activity on every image (checked in the session too)
    assert r["activity_equal_golden"] and r["activity"]["images_equal_golden"] == 12
    assert r["activity"]["per_image_mean"]["read_slots"] == 9600 and r["latency_us_per_image_board"] > 0


def test_inference_ideal_li2018(tmp_path):
    """The controller generated for li2018 (64-54-10 MLP on 8x8 images: H a conv step whose 8x8
    kernel covers the image, with requant; O the logits step) on ideal cells, bit-exact."""
    r = _run(tmp_path, n=16, network="li2018", device="ideal")
    assert r["network"] == "li2018" and r["mismatched_images"] == 0 and r["bitexact_images"] == 16
    assert r["activity_equal_golden"] and r["counters"]["overrun"] == 0
    a = r["activity"]["per_image_mean"]
    assert a["read_slots"] == (4 + 4) * 8 and a["requant_ops"] == 54 and a["softmax_ops"] == 10
    assert r["accuracy_rtl"] == r["accuracy_golden"] >= 80


@pytest.mark.parametrize("eta", [0.3])
def test_transfer_and_hybrid(tmp_path, eta):
    """A large learning rate so that a couple of batches already program cells."""
    r = _run(tmp_path, n=4, device="yao2020", seed=3, iterations=2, eta=eta)
    assert "error" not in r, r.get("error")
    t = r["stages"]["transfer"]
    assert t["conductances_equal_golden"] and t["cells_differing_from_golden"] == 0 and t["cells"] == 5712
    tr = r["stages"]["hybrid"]["trace"]
    assert all(e["conductances_equal_golden"] and e["forward_mismatches"] == 0 for e in tr)
    assert sum(e["cells_programmed"] for e in tr) > 0
    assert r["mismatched_images"] == 0
    # programming activity (SET, RESET, verify reads) equal golden's for the transfer and each iteration
    ses = r["activity_programming"]
    assert set(ses) == {"transfer", "hybrid iteration 1", "hybrid iteration 2"}
    assert all(v["equal"] for v in ses.values())
    assert ses["transfer"]["rtl"]["reset_pulses"] > 0 and r["activity_equal_golden"]
    # the guard (golden.hybrid.Guard, host side): the RTL's eta_sh equals golden's after every iteration
    # (checked in the session); here its halvings against the rule written out from the batch errors
    h = r["stages"]["hybrid"]
    from golden import weights
    from golden.update import eta_params
    errs, best, since, expect = [e["train_error_batch"] for e in tr], None, 0, []
    sh = eta_params(eta, weights.load().q)[1]
    for i in range(len(errs)):
        mean = sum(errs[max(since, i - 1):i + 1]) / len(errs[max(since, i - 1):i + 1])
        if best is None or mean < best:
            best = mean
        elif mean > best + 5:
            sh, best, since = sh + 1, None, i + 1
        expect.append(sh)
    assert [e["eta_sh"] for e in tr] == expect and h["step"] == {"eta": eta, "chosen": False}
    assert 0 <= h["validation_error_before"] <= 100 and len(h["trace"]) == 2

