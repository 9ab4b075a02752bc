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
