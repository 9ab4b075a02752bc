"""`mcnn eval`'s energy and metrics section: JSON keys, consistency with the accuracy table, the
plots, the ADC warning and a bad device preset."""
import json

from golden import cnn
from golden.mapping import build_mapping
from sw.cli import main


def test_eval_energy_json(capsys, tmp_path):
    assert main(["eval", "--n", "120", "--json", "--energy-iterations", "2", "--plots", str(tmp_path)]) == 0
    r = json.loads(capsys.readouterr().out)
    e = r["energy_pj_per_image"]
    assert e["all"] > e["yao"] > 0
    bl = r["energy_breakdown"]["by_layer"]
    assert list(bl) == list(build_mapping(cnn.YAO2020).groups)          # every mapped layer, in order
    tot = sum(sum(v.values()) for v in bl.values())
    assert abs(tot - e["all"]) < 1e-6 * e["all"]
    assert abs(r["energy"]["periphery_share"] - (e["all"] - e["yao"]) / e["all"]) < 1e-12
    assert r["gops_per_w"]["v100"] == 100 and r["gops_per_w"]["all"] < r["gops_per_w"]["yao"]
    cm = r["confusion_matrix"]
    assert sum(map(sum, cm)) == 120 and len(cm) == 10
    assert abs(r["metrics"]["error_rate"] - (100 - r["integer"])) < 1e-9
    t = r["energy"]["energy_transfer_pj"]
    assert t["total"] > 0 and abs(t["total"] - t["set"] - t["reset"] - t["verify"]) < 1e-6
    h = r["energy"]["energy_hybrid_epoch_pj"]
    assert h["images"] == 55000 and abs(h["forward_pj"] - 55000 * e["all"]) < 1e-6 * h["forward_pj"]
    assert r["energy"]["programming_activity"]["hybrid_iterations"] == 2
    assert [a["clip"] for a in r["adc_check"]] == [False, False, False]
    assert sorted(p.split("/")[-1] for p in r["plots"]) == ["confusion_matrix.png", "energy_breakdown.png"]
    assert all((tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in r["plots"])


def test_eval_energy_table_and_adc_warning(capsys):
    assert main(["eval", "--n", "60", "--adc-bits", "7", "--energy-iterations", "0"]) == 0
    out = capsys.readouterr().out
    assert "energy per image (inference)" in out and "GOP/s/W" in out and "weight transfer" in out
    assert "WARNING: FC" in out and "WARNING: C1" not in out and "precision" in out
    assert main(["eval", "--n", "10", "--device", "nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    assert main(["eval", "--n", "10", "--energy-iterations", "-1"]) == 2
    assert "argument --energy-iterations: expected an integer in 0..10000" in capsys.readouterr().err
