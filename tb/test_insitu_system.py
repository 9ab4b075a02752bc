"""System co-simulation of in-situ training, first piece (tb/cosim/insitu_main.py): the li2018
controller with the in-situ scales on a fresh li2018 board, forward pass against golden
InsituTrainer (logits, class, softmax p and output delta of every image)."""
import json


def test_forward_fresh_board(tmp_path):
    from tb.cosim.insitu_main import run
    rep = tmp_path / "report.json"
    run({"seed": 3, "n": 24, "report": str(rep)})
    r = json.loads(rep.read_text())
    assert "error" not in r, r.get("error")
    assert r["mismatched_images"] == 0 and r["bitexact_images"] == 24 and r["overrun"] == 0
    # the case mix was exercised: hidden ReLU zeros and some spread of the logits
    assert r["hidden_zero"] > 0 and r["logit_range"][1] > r["logit_range"][0]
