"""The in-situ training loop in fabric (tb/cosim/insitu_top.py, tb/cosim/insitu_loop_main.py): the
li2018 controller and rtl/insitu_path.py on the same behavioural PEs train a fresh li2018 board over
2 batches of 8 MNIST training images (eta 0.5, threshold 1 code: thousands of commands, so cells
move), InsituPath's programming served by tb/cosim/open_board.py on the RTL's own copy of the board
(random stalls on its ports), then infer 16 MNIST test images on it. Against golden InsituTrainer:
every logit, class, p, delta and training feed, every hidden delta vector, command, verify read,
pulse count and conductance after each batch, every test image's result.

Mutations seen caught: group k's transposed reads wired to PE k+1 (batch 0 image 0: hidden delta
differs); x's bytes reversed within each image word (batch 0 command 0 of layer H: bl 8, golden 10);
the 6th pulse dropped between InsituPath and the board (batch 0: pulses RTL 618, port 619, golden 619).
Closed loop (test_insitu_loop_closed): the top's max_pulses port not passed on to InsituPath (its
preset's 500 stays; batch 0: pulses RTL 19413, golden 2493); golden trained in open mode at the same
threshold (batch 0: pulses RTL 2493, golden 1829).
"""
import json


def test_insitu_loop(tmp_path):
    from golden.idx import default_data_dir
    from tb.cosim.insitu_loop_main import run
    rep = tmp_path / "report.json"
    run({"seed": 7, "batches": 2, "batch": 8, "n_test": 16, "eta": 0.5, "th": 1, "stalls": True,
         "data": str(default_data_dir()), "report": str(rep)})
    r = json.loads(rep.read_text())
    assert "error" not in r, r.get("error")
    assert r["mismatched_images"] == 0 and r["err"] == 0 and r["overrun"] == 0
    assert r["train"]["images"] == 16 and r["test"]["bitexact_images"] == 16
    # the cases were exercised: both layers programmed in every batch, ReLU zeros seen
    assert all(e["commands_h"] > 0 and e["commands_o"] > 0 and e["pulses"] > 0 for e in r["trace"])
    assert all(e["hidden_zero"] for e in r["trace"])


def test_insitu_loop_closed(tmp_path):
    """Closed loop (InsituPath mode "closed", golden InsituConfig mode "closed": Yao's threshold rule,
    6 codes, and write-verify; tb/cosim/open_board.py VerifyBoard): 2 batches of 8 MNIST images, 8
    test images; eta 2 (~1,300 commands, ~1,800 cells written, ~18,000 write-verify requests), pulse
    limit 30 so stuck-OFF cells fail (are blocked, ~100) after few pulses. Checked per
    batch besides the open loop's: every write-verify request (pulse or READ, cell, in order), every
    result (cell, pulses, final code), the blocked cells equal golden's."""
    from golden.idx import default_data_dir
    from tb.cosim.insitu_loop_main import run
    rep = tmp_path / "report.json"
    run({"seed": 7, "batches": 2, "batch": 8, "n_test": 8, "eta": 2.0, "mode": "closed", "max_pulses": 30,
         "stalls": True, "data": str(default_data_dir()), "report": str(rep)})
    r = json.loads(rep.read_text())
    assert "error" not in r, r.get("error")
    assert r["mode"] == "closed" and r["th_code"] == 6 and r["mismatched_images"] == 0 and r["err"] == 0
    assert r["train"]["images"] == 16 and r["test"]["bitexact_images"] == 8
    # the cases were exercised: both layers written through write-verify, cells blocked in every batch
    assert all(e["commands_h"] > 0 and e["commands_o"] > 0 and e["pulses"] > 0 for e in r["trace"])
    assert all(e["wv_requests"] > e["pulses"] and e["blocked"] > 0 for e in r["trace"])
    assert r["train"]["commands_on_blocked"] > 0        # later commands addressed blocked cells
