"""System co-simulation of in-situ training, first pieces (tb/cosim/insitu_main.py): the li2018
controller with the in-situ scales on a fresh li2018 board, over 3 training batches (golden
InsituTrainer.step programs the board between them, eta 0.5, threshold 1 code, so cells move):
per image the logits, class, softmax p and output delta on the result stream, and the output
deltas and hidden activations h on the training feeder's stream (what feeds rtl/insitu_path.py),
against golden InsituTrainer.forward / backward.

The images go back to back (as fast as the controller takes them, train on): the controller itself
must keep each image's label and hidden map for its delta and feed (the result stage latches the
label with the logits; li2018's first step, which writes the map the training feeder reads, waits
until it is read). test_paced: one batch fed one image at a time (params paced=True).

Mutations seen caught: the controller before that fix (the softmax on the image buffer's label, no
map_hold): batch 0 images 2-6 with the next image's label in their delta, feeds 0-6 with the next
image's h (test_paced passes on it); the PE board's cells loaded only before batch 0 (batch 1: all 8
images and feeds differ); the PEs built with SimTop's default ADC full scale instead of SL_ADC
(batch 0: all 8 images and feeds differ).
"""
import json


def test_forward_and_feed_over_batches(tmp_path):
    from tb.cosim.insitu_main import run
    rep = tmp_path / "report.json"
    run({"seed": 3, "batches": 3, "batch": 8, "eta": 0.5, "th": 1, "report": str(rep)})
    r = json.loads(rep.read_text())
    assert "error" not in r, r.get("error")
    assert r["mismatched_images"] == 0 and r["overrun"] == 0 and len(r["batches"]) == 3
    b = r["batches"]
    assert all(not e["mismatched_images"] and not e["mismatched_feed"] for e in b)
    # the case mix was exercised: the board was programmed between batches, ReLU zeros seen
    assert all(e["commands"] > 0 and e["pulses"] > 0 for e in b[:-1]) and all(e["hidden_zero"] for e in b)


def test_paced(tmp_path):
    from tb.cosim.insitu_main import run
    rep = tmp_path / "report.json"
    run({"seed": 4, "batches": 1, "batch": 8, "eta": 0.5, "th": 1, "paced": True, "report": str(rep)})
    r = json.loads(rep.read_text())
    assert "error" not in r, r.get("error")
    assert r["mismatched_images"] == 0 and r["overrun"] == 0 and len(r["batches"]) == 1
    e = r["batches"][0]
    assert not e["mismatched_images"] and not e["mismatched_feed"] and e["commands"] > 0
