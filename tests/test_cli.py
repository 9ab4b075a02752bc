"""The `mcnn` command line: JSON output and clear errors."""
import json
import subprocess
import sys

import pytest

from sw.cli import main


def test_eval_json(capsys):
    assert main(["eval", "--n", "200", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for k in ("float", "quantized", "integer", "seconds_integer_10k"):
        assert isinstance(r[k], float), k
    assert r["images"] == 200
    assert r["agreement_integer_quantized"] == 100.0 and r["logits_equal_images"] == 200


def test_eval_table(capsys):
    assert main(["eval", "--n", "100"]) == 0
    out = capsys.readouterr().out
    assert "Yao 2020" in out and "97.99%" in out and "integer datapath" in out


def test_bad_data_dir(tmp_path, capsys):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    assert main(["eval", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and "error" in err


def test_bad_weights(tmp_path, capsys):
    assert main(["eval", "--weights", str(tmp_path / "nothing")]) == 2
    assert "nothing.npz: missing" in capsys.readouterr().err


def test_console_script_installed():
    """The `mcnn` entry point exists in the environment running the tests."""
    from pathlib import Path
    exe = Path(sys.executable).parent / "mcnn"
    if not exe.exists():
        pytest.skip("not an installed environment (mcnn console script absent)")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "eval" in out


def test_li2018_eval_on_8x8(capsys):
    """--network li2018: the committed weights, the 28x28 test images cropped and averaged to 8x8;
    the integer datapath equals the 15-level model image for image."""
    import numpy as np

    from golden import model, networks, weights
    from golden.idx import default_data_dir, load_dataset
    assert main(["eval", "--network", "li2018", "--n", "300", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["network"] == "li2018" and r["images"] == 300 and r["logits_equal_images"] == 300
    net = networks.network("li2018")
    w = weights.load(weights.default_weights(net), net)
    ds = load_dataset(default_data_dir())
    x8, y = networks.crop_area8(ds.test_images[:300]), ds.test_labels[:300].astype(np.int64)
    assert r["float"] == model.accuracy(w.float_w, x8, y, net.layers) > 90
    assert r["integer"] == r["quantized"] > 90


def test_network_refusals(tmp_path, capsys):
    assert main(["eval", "--network", "li2018", "--stages", "all"]) == 2
    assert "--stages all: not available for --network li2018" in capsys.readouterr().err
    assert main(["eval", "--network", "li2018", "--weights", "weights/yao2020"]) == 2
    assert "weights of network 'yao2020', not 'li2018'" in capsys.readouterr().err
    assert main(["eval", "--network", "lenet"]) == 2
    assert main(["sim", "--network", "li2018", "--n", "2", "--report", str(tmp_path / "r.json")]) == 2
    assert "--device yao2020 (other networks: --device ideal): not available for --network li2018" \
        in capsys.readouterr().err
    assert main(["train", "--network", "li2018", "--epochs", "0", "--init", "weights/yao2020",
                 "--out", str(tmp_path / "x")]) == 2
    assert "weights of network 'yao2020', not 'li2018'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_sim_insitu_refusals(tmp_path, capsys):
    """mcnn sim --network li2018 --device li2018 (the in-situ loop): refusals before any build."""
    rep = tmp_path / "r.json"
    base = ["sim", "--network", "li2018", "--device", "li2018", "--report", str(rep)]
    assert main(base + ["--replicated"]) == 2
    assert "no --replicated, sharding or --waves" in capsys.readouterr().err
    assert main(base + ["--batch", "129"]) == 2 and main(base + ["--eta", "0"]) == 2
    assert main(base + ["--mode", "verify"]) == 2       # the regime: open or closed
    capsys.readouterr()
    rep.write_text("keep")      # (without the --mode check: refused later, for the existing report)
    assert main(["sim", "--network", "yao2020", "--mode", "closed", "--report", str(rep)]) == 2
    assert "--mode: only with --network li2018 --device li2018" in capsys.readouterr().err
    assert main(base) == 2
    assert "exists, not overwritten" in capsys.readouterr().err and rep.read_text() == "keep"


def test_train_li2018(tmp_path, capsys):
    assert main(["train", "--network", "li2018", "--epochs", "1", "--qat-epochs", "1", "--quiet",
                 "--out", str(tmp_path / "li")]) == 0
    assert "li2018: float" in capsys.readouterr().out
    assert json.loads((tmp_path / "li.json").read_text())["network"] == "li2018"
    assert main(["eval", "--network", "li2018", "--weights", str(tmp_path / "li"), "--n", "50"]) == 0
