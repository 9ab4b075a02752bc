"""The board ELM through the generated controller (tb/cosim/elm_main.py): fresh-cell hidden layer
(binary step requant), output layer after a few golden sign-WH batches, MNIST test images bit-exact
with golden (logits, class, p, delta).

Mutation seen caught: the PEs loaded with the board before golden's training batches instead of after
(the RTL reads the fresh output layer: 24 of 24 images differ).
"""
import json


def test_elm_board_forward(tmp_path):
    from golden.idx import default_data_dir
    from tb.cosim.elm_main import run
    rep = tmp_path / "report.json"
    run({"seed": 1, "n": 24, "train_iterations": 20, "data": str(default_data_dir()), "report": str(rep)})
    r = json.loads(rep.read_text())
    assert "error" not in r, r.get("error")
    assert r["mismatched_images"] == 0 and r["bitexact_images"] == 24
    assert r["hidden_values"] == [0, 255] and 0.2 < r["hidden_on_fraction"] < 0.8   # a binary step, both sides
    assert r["training"]["pulses"] > 0
