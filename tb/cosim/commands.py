"""The co-simulation behind the CLI (sw/cli.py dispatches here; the only way sw/ reaches tb/).

  `mcnn sim`                    the main job: the controller RTL drives 8 behavioural PEs on Verilator
                                (cocotb), checked image by image against the golden integer datapath;
                                prints and writes a JSON report (sim_main.py)
  `mcnn sim --replicated`       the same with the replicated-convolver controller (replicated_main.py)
  `mcnn bench` (--cosim-n)      a co-simulation of N images on ideal cells, its throughput figures
  `mcnn board --sim ... --device cosim|controller`   the driver's sessions against the Verilated link
                                (link_cosim.py) or link + host bridge + controller (host_cosim.py)
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from golden.fileio import InputError, check_outputs, write_atomic


def _validated(args):
    """What `mcnn sim` reads and writes, checked before any file is touched (sw/cli.py checked the
    dataset against the network and --n): the weights, the report path (an existing report only
    with --force). -> (weights, the temporary report path the session writes, beside the report)."""
    from golden import weights
    w = weights.load(args.weights, getattr(args, "network", "yao2020"))
    check_outputs([args.report], args.force)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    return w, args.report.with_name(f".{args.report.name}.{os.getpid()}.partial")


def _run_reported(args, tmp: Path, run) -> dict:
    """Run the session writing `tmp`; the report then goes to --report atomically (never deleted,
    replaced only with --force), tmp is removed. A failed check still leaves its report."""
    try:
        try:
            run()
        except AssertionError as e:
            if not tmp.exists():
                raise
            print(f"mcnn sim: {e}", file=sys.stderr)
        data = tmp.read_bytes()
        write_atomic(args.report, data, force=args.force)
    finally:
        if tmp.exists():
            tmp.unlink()
    return json.loads(data)


def _print_energy(r: dict):
    """The energy lines of `mcnn sim` (the report's "energy_*" keys, golden/energy.py)."""
    if "energy_pj_per_image" not in r:
        return
    e, gw = r["energy_pj_per_image"], r["gops_per_w"]
    print(f"  energy per image             {e['yao'] / 1e3:.1f} nJ in the macro blocks Yao counted, "
          f"{e['all'] / 1e3:.1f} nJ with the digital periphery ({100 * r['energy']['periphery_share']:.1f} %); "
          f"{gw['all']:.0f} GOP/s/W (Yao macro {gw['yao2020_macro']}, V100 {gw['v100']})")
    for k, name in (("energy_transfer_pj", "weight transfer"), ("energy_hybrid_iterations_pj", "hybrid iterations")):
        if k in r["energy"]:
            print(f"  energy, {name:<21}{r['energy'][k]['total'] / 1e3:.1f} nJ (SET, RESET pulses, verify reads)")


def sim(args):
    sharded = _check_sharded(args)
    if getattr(args, "replicated", False):
        return sim_replicated(args)
    from tb.cosim import sim_top
    w, tmp = _validated(args)
    params = sim_top.session_params(args.weights, args.data, args.n, tmp, progress=sys.stderr.isatty(),
                                    device=args.device, seed=args.seed, iterations=args.iterations,
                                    name=args.name or Path(args.data).resolve().name, guard=not args.no_guard,
                                    network=getattr(args, "network", "yao2020"))
    print("building the controller + 8 PE models for Verilator, profile-guided (cached after the first run) ...",
          flush=True,
          file=sys.stderr if args.json else sys.stdout)   # --json: stdout is the JSON object alone
    r = _run_reported(args, tmp, (lambda: _sharded(w, args, tmp)) if sharded else
                      lambda: sim_top.run(w, params, log_to_terminal=not args.json, waves=args.waves, pgo=True))
    if args.json:
        print(json.dumps(r))
        return 0 if r.get("mismatched_images", 1) == 0 and "error" not in r else 1
    print(f"\n{'':=<76}\nmcnn sim: the controller RTL on 8 behavioural PEs, device {r['device']}, "
          f"{r['images']} {r['dataset']} test images")
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
        h = st["hybrid"]
        print(f"  hybrid training (RTL)        {len(tr)} iterations, batch train error % {errs}; "
              f"{sum(e['cells_programmed'] for e in tr)} cells programmed, golden-equal "
              f"{all(e['conductances_equal_golden'] for e in tr)}")
        print(f"  hybrid step                  eta {h['step']['eta']:g} "
              + ("(chosen on the validation split)" if h["step"].get("chosen") else "(given)")
              + (f", guard halved it at iteration(s) {[i + 1 for i in h['guard']['decays_at']]}"
                 if h.get("guard") and h["guard"]["decays_at"] else "")
              + f"; validation error {h['validation_error_before']:.2f} -> {h['validation_error_after']:.2f} % "
              f"({h['validation_images']} images)")
    if "inference_after_hybrid" in st:
        i = st["inference_after_hybrid"]
        print(f"  accuracy after hybrid, RTL   {i['accuracy_rtl']:.2f} %   (golden {i['accuracy_golden']:.2f} %), "
              f"bit-exact {i['bitexact_images']}/{r['images']}")
    if "shards" in r:
        print(f"  sharded                      {r['workers']} Dask workers, images/s per shard "
              + " ".join(str(x["cosim_images_per_s"]) for x in r["shards"]) + f"; {r['wall_seconds']:.1f} s in all")
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
    if "activity" in r:
        a = r["activity"]["per_image_mean"]
        print(f"  activity per image (mean)    {a['bl_pulses']:.0f} BL pulses, {a['adc_conversions']:.0f} ADC "
              f"conversions, {a['fm_reads']:.0f} map reads; equal to golden on "
              f"{r['activity']['images_equal_golden']}/{r['images']} images"
              + (", programming sessions too" if r.get("activity_programming") else ""))
    if "latency_us_per_image" in r:
        print(f"  latency per image            {r['latency_us_per_image']:.1f} us (co-simulation top, "
              f"{r['latency']['cosim_clock_mhz']:.0f} MHz), {r['latency_us_per_image_board']:.1f} us (ZC706 board, "
              f"PHY ticks {r['latency']['board_tick_cycles_by_converting_pes']} cycles)")
    _print_energy(r)
    if "error" in r:
        print(f"  ERROR: {r['error']}")
    print(f"  report                       {args.report}")
    return 0 if r.get("mismatched_images", 1) == 0 and "error" not in r and r.get("activity_equal_golden", True) else 1


def _check_sharded(args) -> bool:
    """--workers K > 1 or --scheduler: a sharded co-simulation (tb/cosim/shard.py), checked before
    any file is touched. Not with read noise (its draws depend on the order of the reads)."""
    from sw.cluster import check_scheduler
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if scheduler:
        check_scheduler(scheduler)
    if (workers or 1) == 1 and not scheduler:
        return False
    for bad, what in ((getattr(args, "replicated", False), "--replicated"), (getattr(args, "waves", False), "--waves")):
        if bad:
            raise InputError(f"{what} needs --workers 1 (not sharded)")
    from tb.cosim.shard import check_device
    check_device(getattr(args, "device", "ideal"))
    return True


def _sharded(w, args, tmp: Path):
    """The sharded session: its merged report written to `tmp`; a failed check raised as the
    single session's AssertionError would be (the report kept)."""
    from tb.cosim import shard
    r = shard.run(w, args.weights, args.data, args.n, workers=args.workers, scheduler=args.scheduler,
                  device=args.device, seed=args.seed, progress=sys.stderr.isatty(), iterations=args.iterations,
                  guard=not args.no_guard, name=args.name or Path(args.data).resolve().name, pgo=True)
    tmp.write_text(json.dumps(r, indent=2))
    if "error" in r or r.get("mismatched_images", 1) or not r.get("activity_equal_golden", False):
        raise AssertionError(r.get("error") or f"{r.get('mismatched_images')} images differ from golden")


def sim_replicated(args):
    """`mcnn sim --replicated`: tb/cosim/replicated_main.py (three groups on a device board)."""
    from tb.cosim import replicated_cosim, sim_top
    if args.device == "ideal":
        raise InputError("--replicated needs a device preset, not ideal (the groups' boards come from "
                         "golden's transfer)")
    w, tmp = _validated(args)
    params = sim_top.session_params(args.weights, args.data, args.n, tmp, device=args.device,
                                    seed=args.seed, single=3, rounds=args.iterations // 3, batch=100,
                                    eta=None)     # the board's step, chosen on the data
    print("building the replicated controller + 8 PE models for Verilator (cached after the first run) ...",
          flush=True, file=sys.stderr if args.json else sys.stdout)
    r = _run_reported(args, tmp, lambda: replicated_cosim.run(w, params, log_to_terminal=not args.json,
                                                              waves=args.waves))
    ok = r.get("mismatched_images", 1) == 0 and "error" not in r
    if args.json:
        print(json.dumps(r))
        return 0 if ok else 1
    st = r["stages"]
    print(f"\n{'':=<76}\nmcnn sim --replicated: 3 conv groups + shared FC on 8 behavioural PEs, device "
          f"{r['device']} seed {r['seed']}, {r['images']} {args.name or Path(args.data).resolve().name} test images")
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
    _print_energy(r)
    if "error" in r:
        print(f"  ERROR: {r['error']}")
    print(f"  report                       {args.report}")
    return 0 if ok else 1


def bench(w, weights, data, n: int, workers: int | None = None, scheduler: str | None = None) -> dict:
    """`mcnn bench`: co-simulate n test images on ideal cells; the report's throughput figures.
    With --workers K > 1 (or --scheduler) then the same images sharded over the Dask workers, in
    the same run: "sharded" holds its figures and its speed-up over the single process."""
    import time

    from tb.cosim import sim_top
    sharded = (workers or 1) > 1 or bool(scheduler)
    if scheduler:
        from sw.cluster import check_scheduler
        check_scheduler(scheduler)
    with tempfile.TemporaryDirectory() as td:
        rep = Path(td) / "report.json"
        # compared with shards: the single session as one shard of all n images (its CPU seconds too)
        params = sim_top.session_params(weights, data, n, rep, progress=False, device="ideal",
                                        **({"shard": [0, n]} if sharded else {}))
        t0 = time.perf_counter()
        try:
            sim_top.run(w, params, pgo=True)
        except AssertionError:
            if not rep.exists():
                raise
        wall = time.perf_counter() - t0
        r = json.loads(rep.read_text())
    out = {k: r[k] for k in ("cosim_images_per_s", "cycles_per_image", "bound_cycles_per_image",
                             "measured_over_bound", "bitexact_images", "mismatched_images")}
    out["cosim_images"] = r["images"]
    if sharded:
        from tb.cosim import shard
        out["cosim_wall_seconds"] = round(wall, 2)
        out["cosim_cpu_images_per_s"] = round(n / r["shard"]["cpu_seconds"], 2)
        s = shard.run(w, weights, data, n, workers=workers, scheduler=scheduler, pgo=True)
        out["sharded"] = {k: s.get(k) for k in ("workers", "cosim_images_per_s", "wall_seconds", "bitexact_images",
                                                "mismatched_images", "cycles_per_image", "shards")}
        out["sharded"].update(
            speedup=round(s["cosim_images_per_s"] / r["cosim_images_per_s"], 2) if "cosim_images_per_s" in s else None,
            speedup_wall=round(wall / s["wall_seconds"], 2), error=s.get("error"))
    return out


def board(args) -> dict:
    """`mcnn board --sim SESSION --device cosim|controller`: the session against the co-simulated
    link (tb/cosim/link_cosim.py) or link + host bridge + controller + array models
    (tb/cosim/host_cosim.py); sw.board.run calls it inside its error handling."""
    try:
        return _controller(args) if args.device == "controller" else _link(args)
    except AssertionError as e:            # harness.run_block: the cocotb session failed; its log says why
        raise InputError(_session_failure(str(e))) from e


def _session_failure(msg: str) -> str:
    """One line for a failed co-simulated session: the exception that ended it (the last
    `Type: message` line of the test log's traceback) and where the whole log is."""
    import re
    m = re.search(r"see (\S+test\.log)", msg)
    if not m:
        return f"the co-simulated session failed: {msg}"
    try:
        lines = Path(m.group(1)).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    last = [x.strip() for x in lines if re.match(r"^\s*[A-Za-z_][\w.]*(Error|Exception|Timeout|Mismatch)\w*: ", x)]
    return f"the co-simulated session failed: {last[-1] if last else msg} (log: {m.group(1)})"


def _link(args) -> dict:
    from tb.cosim.link_cosim import run_cosim_session
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "session.json"
        r = run_cosim_session(args.sim, str(out), frames=args.frames, seed=args.seed, rate=args.rate,
                              retries=args.retries, hang_max=args.hang_max, timeout=args.timeout or 1.0,
                              deadline=args.deadline)
    if args.sim != "faults":
        r = {"source": "cosim", **r}
    return r


def _controller(args) -> dict:
    from sw.board import parse_cells
    from tb.cosim.host_cosim import run_host_session
    cfg = dict(frames=args.frames, seed=args.seed, rate=args.rate, retries=args.retries, hang_max=args.hang_max,
               timeout=args.timeout or 1.0, deadline=args.deadline, n=args.images, eta=args.eta,
               board_seed=args.board_seed)
    if args.sim in ("program", "read"):
        cfg["cells"] = parse_cells(args.cells, args.sim == "program")
    with tempfile.TemporaryDirectory() as d:
        r = run_host_session(args.sim, str(Path(d) / "session.json"), **cfg)
    return r if args.sim == "faults" else {"source": "controller", **r}


def sim_insitu(args, network="li2018"):
    """`mcnn sim --network li2018 --device li2018` / `--network elm-board`: in-situ training in fabric
    (tb/cosim/insitu_loop_main.py), --iterations batches of --batch MNIST training images (li2018:
    --mode open / closed; elm-board: sign-WH through SignPath), then --n test images on the trained
    board."""
    from tb.cosim import insitu_loop_main
    check_outputs([args.report], args.force)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.report.with_name(f".{args.report.name}.{os.getpid()}.partial")
    sign = network == "elm-board"
    params = {"network": network, "seed": args.seed, "batches": args.iterations,
              "batch": args.batch or (10 if sign else 100), "n_test": args.n, "eta": args.eta,
              "mode": args.mode or "open", "device": args.device, "data": str(Path(args.data).resolve()),
              "report": str(tmp.resolve()), "progress": not args.json}
    out = sys.stderr if args.json else sys.stdout
    path = "SignPath (sign-WH)" if sign else f"InsituPath ({params['mode']} loop)"
    print(f"building the {network} controller + {path} + 8 PE models for Verilator "
          "(cached after the first run) ...", flush=True, file=out)
    r = _run_reported(args, tmp, lambda: insitu_loop_main.run(params, log_to_terminal=not args.json))
    ok = "error" not in r and r.get("mismatched_images", 1) == 0
    if args.json:
        print(json.dumps(r))
    else:
        tr, te = r.get("train", {}), r.get("test", {})
        how = "SignPath, sign-WH" if sign else f"InsituPath, {r.get('mode', 'open')} loop, eta {r['eta']:g}"
        print(f"\n{'':=<76}\nmcnn sim: {network} trained in situ in fabric (controller + {how}), "
              f"device {r['device']}, seed {r['seed']}")
        print(f"  training   {len(r['trace'])} batches of {r['batch']}: {tr.get('bitexact_images', 0)} images, "
              f"{tr.get('commands', 0)} commands, {tr.get('pulses', 0)} pulses, all equal golden: {'train' in r}; "
              f"{tr.get('cycles_per_image', 0):.0f} cycles/image ({tr.get('cycles_per_image_forward', 0):.0f} "
              f"forward + {'feed' if sign else 'backward'})")
        if "blocked" in tr:
            print(f"  write-verify {tr['cells_written']} cells written, {tr['wv_requests']} requests (pulses and "
                  f"verify reads, max {r['max_pulses']} pulses a cell), {tr['blocked']} cells blocked, "
                  f"{tr['commands_on_blocked']} later commands on them: all equal golden")
        if te.get("images"):
            print(f"  test       {te['images']} images, bit-exact {te['bitexact_images']}, accuracy RTL "
                  f"{te['accuracy_rtl']:.2f} % (golden {te['accuracy_golden']:.2f} %), "
                  f"{te['cycles_per_image']:.0f} cycles/image")
        print(f"  {r.get('wall_seconds', 0):.0f} s; report {args.report}"
              + ("" if ok else f"; FAILED: {r.get('error')}"))
    return 0 if ok else 1
