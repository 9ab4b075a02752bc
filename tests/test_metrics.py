"""golden/metrics.py: Aguirre 2024 Table 2 metrics and the ADC resolution check, against values
computed by hand (and the review's own examples)."""
import numpy as np
import pytest

from golden import cnn
from golden.datapath import DatapathConfig
from golden.mapping import build_mapping
from golden.metrics import (adc_bits_needed, adc_check, classification_metrics, confusion_matrix, format_adc_check,
                            format_metrics, metrics_report, plot_confusion)


def test_confusion_and_metrics_by_hand():
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], n_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]      # rows: true class
    m = classification_metrics(cm)
    assert m["accuracy"] == pytest.approx(60.0) and m["error_rate"] == pytest.approx(40.0)
    assert m["kappa"] == pytest.approx((60 - 100 / 3) / (100 - 100 / 3))
    pc = m["per_class"]
    assert pc["precision"][:2] == pytest.approx([1 / 2, 2 / 3])
    assert pc["precision"][2] is None                             # class 2 never predicted: 0/0
    assert pc["recall"] == pytest.approx([1 / 2, 1.0, 0.0])
    # class 0: TP 1, FN 1, FP 1, TN 2; class 1: TP 2, FP 1, TN 2; class 2: TP 0, FN 1, FP 0, TN 4
    assert pc["specificity"] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert pc["f1"][:2] == pytest.approx([0.5, 0.8]) and pc["f1"][2] is None
    assert pc["support"] == [2, 2, 1]
    assert m["macro"]["recall"] == pytest.approx(0.5)
    assert m["macro"]["f1"] == pytest.approx(0.65)
    assert "class" in format_metrics(m)


def test_confusion_random_against_loop():
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    cm = confusion_matrix(y, p, 10)
    ref = np.zeros((10, 10), int)
    for a, b in zip(y, p):
        ref[a, b] += 1
    assert (cm == ref).all()
    m = classification_metrics(cm)
    assert m["error_rate"] == pytest.approx(100 * (y != p).mean())
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="classes"):
        confusion_matrix([0, 10], [0, 1], 10)


def test_adc_bits_needed():
    assert adc_bits_needed(1, 1, 256) == 8       # Aguirre 2024: binary cells and inputs, 256 rows
    assert adc_bits_needed(1, 5, 256) == 13      # 5-bit cells
    assert adc_bits_needed(8, 3, 16) == 15       # 255 x 7 x 16 = 28,560 < 2^15
    assert adc_bits_needed(1, 3, 9) == 6         # 63
    assert adc_bits_needed(1, 1, 2) == 1         # the published form: log2 of the largest sum, not of sum + 1
    with pytest.raises(ValueError):
        adc_bits_needed(0, 3, 9)


def test_adc_check_yao_mapping():
    m = build_mapping()
    rows = {r["layer"]: r for r in adc_check(cnn.YAO2020, m, DatapathConfig(adc_bits=8))}
    assert [rows[k]["N"] for k in ("C1", "C3", "FC")] == [9, 9, 16]
    assert [rows[k]["bits_needed"] for k in ("C1", "C3", "FC")] == [6, 6, 7]
    # cell model: 9 x 4 uA = code 72 (7 bits); 16 x 4 uA = code 128 (8 bits) at 0.5 uA per code
    assert rows["FC"]["worst_code_cell_model"] == 128 and rows["FC"]["bits_needed_cell_model"] == 8
    assert not any(r["clip"] for r in rows.values())
    rows7 = {r["layer"]: r for r in adc_check(cnn.YAO2020, m, DatapathConfig(adc_bits=7))}
    assert [rows7[k]["clip"] for k in ("C1", "C3", "FC")] == [False, False, True]
    txt = format_adc_check(list(rows7.values()))
    assert "WARNING: FC" in txt and "WARNING: C1" not in txt


def test_plot_confusion(tmp_path):
    f = plot_confusion(np.eye(3, dtype=int) * 5, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000 and f.endswith("cm.png")


def test_metrics_report_one_call():
    r = metrics_report([1, 2, 3], [1, 2, 2], cnn.YAO2020, build_mapping())
    assert len(r["confusion_matrix"]) == 10 and r["confusion_matrix"][3][2] == 1
    assert r["metrics"]["error_rate"] == pytest.approx(100 / 3)
    assert [a["layer"] for a in r["adc_check"]] == ["C1", "C3", "FC"]
