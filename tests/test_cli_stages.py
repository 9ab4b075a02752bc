"""`mcnn eval --stages all`: the device stages, on a tiny budget (the full run is in docs/devices.md)."""
import json

from sw.cli import main


def test_eval_stages_all_json(capsys, tmp_path):
    argv = ["eval", "--stages", "all", "--seeds", "2", "--n", "150", "--n-train", "400", "--iterations", "3",
            "--rep-iterations", "3", "--record-every", "2", "--jobs", "1", "--json", "--plots", str(tmp_path)]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    for k in ("float", "quantized", "integer", "seconds_integer_10k", "transferred", "hybrid", "transferred_sd",
              "hybrid_sd", "seconds_hybrid_epoch"):
        assert isinstance(r[k], float), k
    assert r["seeds"] == [0, 1] and r["images"] == 150
    assert len(r["groups_before"]) == len(r["groups_after"]) == 3
    assert all(0 <= e <= 100 for e in r["groups_before"] + r["groups_after"])
    assert abs(r["transferred"] - (100 - r["groups_before"][0])) < 1e-9
    assert abs(r["transfer_loss"] - (r["quantized"] - r["transferred"])) < 1e-9        # issue 19's figure
    assert r["per_seed"][0]["trace"]["iterations"] == [0, 2, 3]
    for s in r["per_seed"]:     # issue 19: no dataset's step built in; the replicated groups take the chosen one
        assert s["step"]["chosen"] and s["rep_eta"] == s["step"]["eta"]
    assert r["transfer_failed"] == len(r["transfer_failures"])
    assert sorted(p.split("/")[-1] for p in r["plots"]) == sorted(
        ["error_vs_iteration.png", "transfer_error.png", "level_distributions.png", "pulses_per_level.png",
         "energy_breakdown.png", "confusion_matrix.png"])
    assert r["energy_pj_per_image"]["all"] > r["energy_pj_per_image"]["yao"] > 0 and "gops_per_w" in r
    assert all((tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in r["plots"])


def test_eval_stages_table_and_errors(capsys):
    argv = ["eval", "--stages", "all", "--seeds", "1", "--n", "100", "--n-train", "300", "--iterations", "2",
            "--rep-iterations", "3", "--jobs", "1", "--device", "bennett2019"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "after weight transfer" in out and "95.07 %" in out and "group G3" in out and "device bennett2019" in out
    assert "transfer loss (15-level - transferred)" in out and "1.85 points" in out      # Yao: 96.92 - 95.07
    assert main(["eval", "--stages", "all", "--device", "nope", "--n", "10"]) == 2
    assert "argument --device: invalid choice: 'nope'" in capsys.readouterr().err
