"""The forward co-simulation of a saved in-situ trained board (tb/cosim/board_main.py, `mcnn sim
--network li2018 --board FILE`): a li2018 board trained in situ by golden for 10 batches of MNIST,
saved to a board file, its first 16 test images through the RTL (insitu_main's top, the board's
cell currents loaded by backdoor): every image bit-exact (logits, class, p, delta) and the RTL's
correct count equal to the count computed here from the trainer that was saved (not from the file).

Mutations seen caught: the PEs loaded with the fresh board's currents (Crossbar of the same seed)
instead of the trained board's (16/16 images differ); golden's softmax with sh + 1 (16/16 differ).
"""
import json

import numpy as np


def test_saved_board_forward_on_the_rtl(tmp_path):
    from golden.crossbar import Crossbar
    from golden.datapath import argmax
    from golden.hybrid import batch_order
    from golden.idx import default_data_dir, load_dataset
    from golden.insitu import InsituConfig, InsituTrainer, flat_inputs, train
    from golden.insitu_board import save_board
    from golden.networks import network
    from tb.cosim.board_main import run
    net = network("li2018")
    ds = load_dataset(default_data_dir())
    x, y = flat_inputs(net, ds.train_images[:1000]), ds.train_labels[:1000].astype(np.int64)
    t = InsituTrainer(Crossbar("li2018", seed=1), net, InsituConfig(eta=0.08))
    train(t, x, y, batch_order(1000, 100, 10, seed=0))
    board = save_board(t, tmp_path / "board.npz")
    n = 16
    want = int((argmax(t.logits(flat_inputs(net, ds.test_images[:n]))) == ds.test_labels[:n]).sum())
    rep = tmp_path / "report.json"
    run({"board": str(board), "data": str(default_data_dir()), "n": n, "report": str(rep)})
    r = json.loads(rep.read_text())
    assert "error" not in r, r.get("error")
    assert (r["images"], r["bitexact_images"], r["mismatched_images"], r["overrun"]) == (n, n, 0, 0)
    assert r["correct_rtl"] == r["correct_golden"] == want and 4 < want < n   # trained, not perfect
    assert r["board_iterations"] == 10 and r["cycles_per_image"] > 0
