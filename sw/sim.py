"""`mcnn sim`: the main job. The controller RTL drives 8 behavioural PEs on Verilator (cocotb),
checked image by image against the golden integer datapath; prints and writes a JSON report."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(sub, common):
    p = sub.add_parser("sim", help="co-simulate the controller RTL with 8 behavioural PEs (the main job)")
    common(p)
    p.add_argument("--n", type=int, default=1000, help="test images (default 1000; 10000 for all)")
    p.add_argument("--report", type=Path, default=Path("build/sim_report.json"))
    p.add_argument("--waves", action="store_true", help="write an FST waveform (slow)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(fn=cmd_sim)


def cmd_sim(args):
    from golden import weights
    from tb import sim_top
    w = weights.load(args.weights)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    if args.report.exists():
        args.report.unlink()
    params = {"weights": str(Path(args.weights).resolve()), "data": str(Path(args.data).resolve()),
              "n": args.n, "report": str(args.report.resolve()), "progress": sys.stderr.isatty()}
    print("building the controller + 8 PE models for Verilator (cached after the first run) ...", flush=True)
    try:
        sim_top.run(w, params, log_to_terminal=not args.json, waves=args.waves)
    except AssertionError as e:
        if not args.report.exists():
            raise
        print(f"mcnn sim: {e}", file=sys.stderr)
    r = json.loads(args.report.read_text())
    if args.json:
        print(json.dumps(r))
        return 0 if r["mismatched_images"] == 0 else 1
    print(f"\n{'':=<72}\nmcnn sim: {r['images']} MNIST test images through the controller RTL ({r['device']})")
    print(f"  accuracy, RTL            {r['accuracy_rtl']:.2f} %   (golden integer datapath "
          f"{r['accuracy_golden']:.2f} %)")
    print(f"  bit-exact with golden    {r['bitexact_images']}/{r['images']} images "
          f"(logits, class, softmax p, delta)")
    print(f"  cycles per image         {r['cycles_per_image']:.0f}  (array bound {r['bound_cycles_per_image']}, "
          f"ratio {r['measured_over_bound']:.4f})")
    print(f"  co-simulation            {r['cosim_images_per_s']:.1f} images/s "
          f"(golden model {r['golden_images_per_s']:.0f} images/s)")
    c = r["counters"]
    print(f"  counters                 {c['slot_reads']} slot reads, {c['adc_conversions']} ADC conversions, "
          f"{c['lane_idle_cycles']} idle lane cycles, overrun {c['overrun']}")
    print(f"  report                   {args.report}")
    return 0 if r["mismatched_images"] == 0 else 1
