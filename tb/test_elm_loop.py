"""The board ELM trained in fabric (tb/cosim/insitu_top.py SignLoopTop, tb/cosim/insitu_loop_main.py):
the elm-board controller (error "sign": the feeder's DELTA items are the sign-WH errors) and
rtl/sign_path.py SignPath on the same behavioural PEs train the output layer of a fresh li2018 board
over 2 batches of 10 MNIST training images back to back, SignPath's pulses served by
tb/cosim/open_board.py Board on the RTL's own copy of the board (random stalls on `req`), then infer
16 MNIST test images on it. Against golden InsituTrainer: every logit, class, p, sign error and
training feed (e, h), every command, pulse count and conductance after each batch, every test
image's result.

Mutation seen caught: the session not waiting for the batch's last feed before its FINISH (batch
0: "9 images fed", the FINISH ahead of the last image's items). The error unit's own mutations:
tb/test_sign_error.py.
"""
import json


def test_elm_loop(tmp_path):
    from golden.idx import default_data_dir
    from tb.cosim.insitu_loop_main import run
    rep = tmp_path / "report.json"
    run({"network": "elm-board", "seed": 3, "batches": 2, "batch": 10, "n_test": 16, "stalls": True,
         "data": str(default_data_dir()), "report": str(rep)})
    r = json.loads(rep.read_text())
    assert "error" not in r, r.get("error")
    assert r["network"] == "elm-board" and r["mismatched_images"] == 0 and r["err"] == 0 and r["overrun"] == 0
    assert r["train"]["images"] == 20 and r["test"]["bitexact_images"] == 16
    # the cases were exercised: the output layer programmed in every batch (two pulses a command)
    assert all(e["commands_o"] > 0 and e["pulses"] == 2 * e["commands_o"] for e in r["trace"])
