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
    p.add_argument("--device", default="yao2020",
                   help="device preset of the PEs (golden/devices.py), or 'ideal' (exact target levels)")
    p.add_argument("--seed", type=int, default=0, help="device seed of the board")
    p.add_argument("--iterations", type=int, default=10, help="hybrid-training iterations (batches of 100)")
    p.add_argument("--report", type=Path, default=Path("build/sim_report.json"))
    p.add_argument("--waves", action="store_true", help="write an FST waveform (slow)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--replicated", action="store_true",
                   help="the replicated-convolver controller (rtl/replicated.py): three groups, shared FC; "
                        "--iterations batches of replicated training (rounds of 3, update per round, clip 30 codes)")
    p.set_defaults(fn=cmd_sim)


def cmd_sim(args):
    if getattr(args, "replicated", False):
        return cmd_sim_replicated(args)
    from golden import weights
    from tb import sim_top
    w = weights.load(args.weights)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    if args.report.exists():
        args.report.unlink()
    params = sim_top.session_params(args.weights, args.data, args.n, args.report, progress=sys.stderr.isatty(),
                                    device=args.device, seed=args.seed, iterations=args.iterations)
    print("building the controller + 8 PE models for Verilator (cached after the first run) ...", flush=True,
          file=sys.stderr if args.json else sys.stdout)   # --json: stdout is the JSON object alone
    try:
        sim_top.run(w, params, log_to_terminal=not args.json, waves=args.waves)
    except AssertionError as e:
        if not args.report.exists():
            raise
        print(f"mcnn sim: {e}", file=sys.stderr)
    r = json.loads(args.report.read_text())
    if args.json:
        print(json.dumps(r))
        return 0 if r.get("mismatched_images", 1) == 0 and "error" not in r else 1
    print(f"\n{'':=<76}\nmcnn sim: the controller RTL on 8 behavioural PEs, device {r['device']}, "
          f"{r['images']} MNIST test images")
    st = r["stages"]
    if "transfer" in st:
        t = st["transfer"]
        print(f"  transfer (RTL write-verify)  {t['cells']} cells, {t['failed_cells']} failed, pulses mean "
              f"{t['pulses_mean']:.1f} max {t['pulses_max']}; conductances equal golden: "
              f"{t['conductances_equal_golden']}")
    if "inference" in st:
        i = st["inference"]
        print(f"  accuracy, RTL                {i['accuracy_rtl']:.2f} %   (golden {i['accuracy_golden']:.2f} %), "
              f"bit-exact {i['bitexact_images']}/{r['images']} (logits, class, p, delta)")
    if "hybrid" in st:
        tr = st["hybrid"]["trace"]
        errs = " ".join(f"{e['train_error_batch']:.0f}" for e in tr)
        print(f"  hybrid training (RTL)        {len(tr)} iterations, batch train error % {errs}; "
              f"{sum(e['cells_programmed'] for e in tr)} cells programmed, golden-equal "
              f"{all(e['conductances_equal_golden'] for e in tr)}")
    if "inference_after_hybrid" in st:
        i = st["inference_after_hybrid"]
        print(f"  accuracy after hybrid, RTL   {i['accuracy_rtl']:.2f} %   (golden {i['accuracy_golden']:.2f} %), "
              f"bit-exact {i['bitexact_images']}/{r['images']}")
    if "cycles_per_image" in r:
        print(f"  cycles per image             {r['cycles_per_image']:.0f}  (array bound "
              f"{r['bound_cycles_per_image']}, ratio {r['measured_over_bound']:.4f})")
        print(f"  co-simulation                {r['cosim_images_per_s']:.1f} images/s "
              f"(golden model {r['golden_images_per_s']:.0f} images/s)")
    if "counters" in r:
        c = r["counters"]
        print(f"  counters                     {c['slot_reads']} slot reads, {c['adc_conversions']} ADC conversions, "
              f"{c['lane_idle_cycles']} idle lane cycles, overrun {c['overrun']}"
              + (f"; {c['set_pulses']} SET + {c['reset_pulses']} RESET pulses, {c['verify_reads']} verify reads"
                 if c.get("set_pulses", 0) + c.get("reset_pulses", 0) + c.get("verify_reads", 0) else "")
              + (" (equal to golden)" if c.get("counters_match_golden") else ""))
    if "error" in r:
        print(f"  ERROR: {r['error']}")
    print(f"  report                       {args.report}")
    return 0 if r.get("mismatched_images", 1) == 0 and "error" not in r else 1


def cmd_sim_replicated(args):
    """`mcnn sim --replicated`: tb/replicated_main.py (three groups on a device board)."""
    from golden import weights
    from golden.hybrid import ETA_REP_DEFAULT
    from tb import replicated_cosim, sim_top
    if args.device == "ideal":
        print("mcnn sim --replicated: needs a device preset (the groups' boards come from golden's transfer)",
              file=sys.stderr)
        return 2
    w = weights.load(args.weights)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    if args.report.exists():
        args.report.unlink()
    params = sim_top.session_params(args.weights, args.data, args.n, args.report, device=args.device,
                                    seed=args.seed, single=3, rounds=args.iterations // 3, batch=100,
                                    eta=ETA_REP_DEFAULT)
    print("building the replicated controller + 8 PE models for Verilator (cached after the first run) ...",
          flush=True, file=sys.stderr if args.json else sys.stdout)
    try:
        replicated_cosim.run(w, params, log_to_terminal=not args.json, waves=args.waves)
    except AssertionError as e:
        if not args.report.exists():
            raise
        print(f"mcnn sim: {e}", file=sys.stderr)
    r = json.loads(args.report.read_text())
    ok = r.get("mismatched_images", 1) == 0 and "error" not in r
    if args.json:
        print(json.dumps(r))
        return 0 if ok else 1
    st = r["stages"]
    print(f"\n{'':=<76}\nmcnn sim --replicated: 3 conv groups + shared FC on 8 behavioural PEs, device "
          f"{r['device']} seed {r['seed']}, {r['images']} MNIST test images")
    if "inference" in st:
        i = st["inference"]
        acc = "  ".join(f"{g} {i['per_group_accuracy_rtl'][g]:.2f} % (golden {i['per_group_accuracy_golden'][g]:.2f})"
                        for g in r["groups"])
        print(f"  accuracy per group, RTL      {acc}")
        print(f"  accuracy, RTL                {i['accuracy_rtl']:.2f} %   (golden {i['accuracy_golden']:.2f} %), "
              f"bit-exact {i['bitexact_images']}/{r['images']}, group tags wrong {i['wrong_group_tags']}")
        print(f"  cycles between results       {i['cycles_per_image']:.0f}  (FC arbitration waits "
              f"{i['fc_wait_cycles']} cycles in all)")
    if "single_group" in st:
        print(f"  single group (route G1)      {st['single_group']['cycles_per_image']:.0f} cycles per image; "
              f"replicated / single {r['replicated_over_single']:.4f}")
    if "training" in st:
        tr = st["training"]["trace"]
        print(f"  replicated training (RTL)    {len(tr)} rounds of 3 x {st['training']['batch_per_group']} images, "
              f"{sum(e['cells_programmed'] for e in tr)} cells programmed, golden-equal "
              f"{all(e['conductances_equal_golden'] for e in tr)}")
    if "inference_after_training" in st:
        i = st["inference_after_training"]
        acc = "  ".join(f"{g} {a:.2f} %" for g, a in i["per_group_accuracy_rtl"].items())
        print(f"  after training, RTL          {acc}; bit-exact {i['bitexact_images']}/{r['images']}")
    if "error" in r:
        print(f"  ERROR: {r['error']}")
    print(f"  report                       {args.report}")
    return 0 if ok else 1
