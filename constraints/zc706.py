"""Xilinx ZC706 (XC7Z045-2FFG900): pin facts, the pin assignment of the board top and its XDC.

One table, three uses: `xdc()` writes constraints/zc706.xdc for rtl/zc706_top.py's ZC706Top
(module mcnn_zc706; `mcnn synth` regenerates it and tests/test_synth.py checks it is current),
and ZC706Platform is the same pins as an Amaranth platform for designs that use
platform.request().

Sources of the pin facts (both public, cross-checked against each other where they overlap):
  [L] litex-hub/litex-boards, litex_boards/platforms/xilinx_zc706.py: clk200 H9/G9 LVDS,
      cpu_reset A8 LVCMOS15, user LEDs Y21 G2 W21 A17, pmod1 "AJ21 AK21 AB21 AB16 Y20 AA20 AC18
      AC19", and the FMC HPC (J37) LA00..LA33 and CLK0/CLK1_M2C pins.
  [A] analogdevicesinc/hdl, projects/fmcomms5/zc706/system_constr.xdc: the HPC LA pins with their
      FMC connector positions (G06 = LA00_CC_P, ...) and LVCMOS25/LVDS_25 on them (VADJ = 2.5 V).
  [P] VLSI-EDA/PoC, ucf/ZC706/*.xdc: system clock H9/G9 (200 MHz SiT9102, 5.000 ns), CPU reset
      A8 (SW13, active high, 1 k pull-down), LEDs (A17, G2 LVCMOS15; W21, Y21 LVCMOS25; PoC
      numbers them in the opposite order to [L]), PMOD1 J58 pins (level-shifted to 3.3 V by a
      TXS0108E, LVCMOS25 on the FPGA side).
  The board's own documentation is UG954 (ZC706 Evaluation Board User Guide) and its schematic
  XTP215; pins marked "L" below are from [L] alone (not in [A]); re-check those, and the PMOD
  header pin numbers, against UG954 before wiring a board.

The host UART. The ZC706's USB-UART bridge (CP2103) is wired to the Zynq PS (MIO), not to PL
pins, so a PL-only design has no UART pins of its own (neither [L] nor [P] lists one). The link's
UART therefore goes to PMOD1 (J58) through any 3.3 V USB-UART adapter: uart_rx = PMOD1 signal 0
(AJ21), uart_tx = PMOD1 signal 1 (AK21). (Routing the PS UART through EMIO would need the PS7
block and is left to a Vivado block design.)

The PE-board bus (rtl/pe_fmc.py) on the FMC HPC connector: 36 outputs (forwarded clock, addr[8]
= {port, beat} for the 8 PEs and the programming port, we, apply, re, wdata) and 34 inputs
(rdata, rvalid, ready) on all 68 LA lines plus the two M2C clock inputs, all single-ended
LVCMOS25 (VADJ 2.5 V). Outputs take LA00_CC_P onwards in pair order, rdata the LA lines after
them; rvalid and ready take CLK0_M2C_P / CLK1_M2C_P (inputs by the FMC convention).
"""
from __future__ import annotations

DEVICE, PACKAGE, SPEED = "xc7z045", "ffg900", "2"
PART = f"{DEVICE}{PACKAGE}-{SPEED}"

# FMC HPC (J37) LA lines: name -> (FPGA pin, FMC connector position, sources)
FMC_HPC = {
    "LA00_CC_P": ("AF20", "G6", "LA"), "LA00_CC_N": ("AG20", "G7", "LA"),
    "LA01_CC_P": ("AG21", "D8", "LA"), "LA01_CC_N": ("AH21", "D9", "LA"),
    "LA02_P": ("AK17", "H7", "LA"), "LA02_N": ("AK18", "H8", "LA"),
    "LA03_P": ("AH19", "G9", "LA"), "LA03_N": ("AJ19", "G10", "LA"),
    "LA04_P": ("AJ20", "H10", "LA"), "LA04_N": ("AK20", "H11", "LA"),
    "LA05_P": ("AH23", "D11", "LA"), "LA05_N": ("AH24", "D12", "LA"),
    "LA06_P": ("AG22", "C10", "LA"), "LA06_N": ("AH22", "C11", "LA"),
    "LA07_P": ("AJ23", "H13", "LA"), "LA07_N": ("AJ24", "H14", "LA"),
    "LA08_P": ("AF19", "G12", "LA"), "LA08_N": ("AG19", "G13", "LA"),
    "LA09_P": ("AD21", "D14", "LA"), "LA09_N": ("AE21", "D15", "LA"),
    "LA10_P": ("AG24", "C14", "LA"), "LA10_N": ("AG25", "C15", "LA"),
    "LA11_P": ("AD23", "H16", "LA"), "LA11_N": ("AE23", "H17", "LA"),
    "LA12_P": ("AF23", "G15", "LA"), "LA12_N": ("AF24", "G16", "LA"),
    "LA13_P": ("AA22", "D17", "LA"), "LA13_N": ("AA23", "D18", "LA"),
    "LA14_P": ("AC24", "C18", "LA"), "LA14_N": ("AD24", "C19", "LA"),
    "LA15_P": ("Y22", "H19", "LA"), "LA15_N": ("Y23", "H20", "LA"),
    "LA16_P": ("AA24", "G18", "LA"), "LA16_N": ("AB24", "G19", "LA"),
    "LA17_CC_P": ("V23", "D20", "LA"), "LA17_CC_N": ("W24", "D21", "LA"),
    "LA18_CC_P": ("W25", "C22", "LA"), "LA18_CC_N": ("W26", "C23", "LA"),
    "LA19_P": ("T24", "H22", "LA"), "LA19_N": ("T25", "H23", "LA"),
    "LA20_P": ("U25", "G21", "LA"), "LA20_N": ("V26", "G22", "LA"),
    "LA21_P": ("W29", "H25", "LA"), "LA21_N": ("W30", "H26", "LA"),
    "LA22_P": ("V27", "G24", "LA"), "LA22_N": ("W28", "G25", "LA"),
    "LA23_P": ("P25", "D23", "LA"), "LA23_N": ("P26", "D24", "LA"),
    "LA24_P": ("T30", "H28", "LA"), "LA24_N": ("U30", "H29", "LA"),
    "LA25_P": ("T29", "G27", "LA"), "LA25_N": ("U29", "G28", "L"),
    "LA26_P": ("R28", "D26", "LA"), "LA26_N": ("T28", "D27", "LA"),
    "LA27_P": ("V28", "C26", "LA"), "LA27_N": ("V29", "C27", "LA"),
    "LA28_P": ("P30", "H31", "LA"), "LA28_N": ("R30", "H32", "L"),
    "LA29_P": ("R25", "G30", "LA"), "LA29_N": ("R26", "G31", "LA"),
    "LA30_P": ("P23", "H34", "LA"), "LA30_N": ("P24", "H35", "LA"),
    "LA31_P": ("N29", "G33", "LA"), "LA31_N": ("P29", "G34", "LA"),
    "LA32_P": ("P21", "H37", "LA"), "LA32_N": ("R21", "H38", "L"),
    "LA33_P": ("N26", "G36", "L"), "LA33_N": ("N27", "G37", "L"),
    "CLK0_M2C_P": ("AE22", "H4", "L"), "CLK0_M2C_N": ("AF22", "H5", "L"),
    "CLK1_M2C_P": ("U26", "G2", "L"), "CLK1_M2C_N": ("U27", "G3", "L"),
}
LA_ORDER = [n for n in FMC_HPC if n.startswith("LA")]

# On-board resources: port -> (pin, IOSTANDARD, note)
BOARD = {
    "clk200_p": ("H9", "LVDS", "SYSCLK_P, 200 MHz SiT9102 [L][P]"),
    "clk200_n": ("G9", "LVDS", "SYSCLK_N [L][P]"),
    "cpu_reset": ("A8", "LVCMOS15", "SW13 CPU_RESET, active high [L][P]"),
    "led[0]": ("Y21", "LVCMOS25", "user LED [L] user_led0 ([P] LED[3])"),
    "led[1]": ("G2", "LVCMOS15", "user LED [L] user_led1 ([P] LED[2])"),
    "led[2]": ("W21", "LVCMOS25", "user LED [L] user_led2 ([P] LED[1])"),
    "led[3]": ("A17", "LVCMOS15", "user LED [L] user_led3 ([P] LED[0])"),
    "uart_rx": ("AJ21", "LVCMOS25", "PMOD1 (J58) signal 0, host -> FPGA [L][P]"),
    "uart_tx": ("AK21", "LVCMOS25", "PMOD1 (J58) signal 1, FPGA -> host [L][P]"),
}
PMOD1 = ["AJ21", "AK21", "AB21", "AB16", "Y20", "AA20", "AC18", "AC19"]   # [L] pmod1, [P] J58

# the PE-board bus of rtl/pe_fmc.py: (port, width, direction) in assignment order
FMC_OUTPUTS = [("fmc_clk", 1), ("fmc_addr", 8), ("fmc_we", 1), ("fmc_apply", 1), ("fmc_re", 1),
               ("fmc_wdata", 24)]
FMC_INPUTS_LA = [("fmc_rdata", 32)]
FMC_INPUTS_CLK = {"fmc_rvalid": "CLK0_M2C_P", "fmc_ready": "CLK1_M2C_P"}
SYS_CLK_PERIOD_NS = 5.000


def _bits(name: str, width: int) -> list[str]:
    return [name] if width == 1 else [f"{name}[{i}]" for i in range(width)]


def fmc_assignment(outputs=FMC_OUTPUTS, inputs=FMC_INPUTS_LA, clk_inputs=FMC_INPUTS_CLK) -> dict:
    """port bit -> FMC signal name (LA lines in order: outputs first, then inputs)."""
    bits = [b for n, w in outputs for b in _bits(n, w)] + [b for n, w in inputs for b in _bits(n, w)]
    if len(bits) > len(LA_ORDER):
        raise ValueError(f"{len(bits)} bus bits for {len(LA_ORDER)} LA lines")
    out = dict(zip(bits, LA_ORDER))
    out.update(clk_inputs)
    return out


def pin_table(widths: dict | None = None) -> list[tuple]:
    """[(port bit, FPGA pin, IOSTANDARD, note)] for every port of mcnn_zc706. `widths` overrides
    the bus widths ({port: width}) when the PHY's parameters differ from the defaults."""
    outs = [(n, (widths or {}).get(n, w)) for n, w in FMC_OUTPUTS]
    ins = [(n, (widths or {}).get(n, w)) for n, w in FMC_INPUTS_LA]
    rows = [(p, pin, std, note) for p, (pin, std, note) in BOARD.items()]
    for bit, sig in fmc_assignment(outs, ins).items():
        pin, pos, src = FMC_HPC[sig]
        rows.append((bit, pin, "LVCMOS25", f"FMC HPC {sig} (J37 {pos}) [{']['.join(src)}]"))
    return rows


def xdc(widths: dict | None = None) -> str:
    lines = [
        "## ZC706 (XC7Z045-2FFG900) constraints for mcnn_zc706 (rtl/zc706_top.py: ZC706Top).",
        "## Generated by constraints/zc706.py (`mcnn synth` rewrites it); sources of the pin facts:",
        "##   [L] litex-hub/litex-boards litex_boards/platforms/xilinx_zc706.py",
        "##   [A] analogdevicesinc/hdl projects/fmcomms5/zc706/system_constr.xdc (FMC HPC LA pins)",
        "##   [P] VLSI-EDA/PoC ucf/ZC706/*.xdc",
        "##   board documentation: UG954 (ZC706 user guide), XTP215 (schematic)",
        "",
    ]
    for bit, pin, std, note in pin_table(widths):
        lines.append(f"set_property -dict {{PACKAGE_PIN {pin} IOSTANDARD {std}}} [get_ports {{{bit}}}] ;# {note}")
    lines += [
        "",
        f"create_clock -period {SYS_CLK_PERIOD_NS:.3f} -name clk200 [get_ports clk200_p]",
        "## sync = MMCM CLKOUT0 = 100 MHz (derived by Vivado from clk200)",
        "set_false_path -from [get_ports {cpu_reset uart_rx}]",
        "set_false_path -to [get_ports {uart_tx led[*]}]",
        "## fmc_*: registered in the fabric; fmc_clk is the forwarded sync clock (ODDR). Add",
        "## set_input_delay / set_output_delay against it once the PE board's timing is known.",
        "set_property SLEW FAST [get_ports {fmc_clk fmc_addr[*] fmc_we fmc_apply fmc_re fmc_wdata[*]}]",
        "",
    ]
    return "\n".join(lines)


def _platform_class():
    from amaranth.build import Attrs, Clock, Connector, DiffPairs, Pins, Resource, Subsignal
    from amaranth.vendor import XilinxPlatform

    conn = ("fmc_hpc", 0)

    def la(sigs, d):
        return Pins(" ".join(sigs), dir=d, conn=conn)

    a = fmc_assignment()
    by_port = {}
    for bit, sig in a.items():
        by_port.setdefault(bit.split("[")[0], []).append(sig)

    class ZC706Platform(XilinxPlatform):
        """Amaranth platform of the ZC706 with the resources mcnn uses (pins as in xdc())."""
        device, package, speed = DEVICE, PACKAGE, SPEED
        default_clk = "clk200"
        default_rst = "cpu_reset"
        resources = [
            Resource("clk200", 0, DiffPairs("H9", "G9", dir="i"), Clock(200e6), Attrs(IOSTANDARD="LVDS")),
            Resource("cpu_reset", 0, Pins("A8", dir="i"), Attrs(IOSTANDARD="LVCMOS15")),
            *[Resource("led", i, Pins(BOARD[f"led[{i}]"][0], dir="o"), Attrs(IOSTANDARD=BOARD[f"led[{i}]"][1]))
              for i in range(4)],
            Resource("uart", 0, Subsignal("rx", Pins("1", dir="i", conn=("pmod", 1))),
                     Subsignal("tx", Pins("2", dir="o", conn=("pmod", 1))), Attrs(IOSTANDARD="LVCMOS25")),
            Resource("pe_bus", 0,
                     *[Subsignal(n.removeprefix("fmc_"), la(by_port[n], "o")) for n, _ in FMC_OUTPUTS],
                     *[Subsignal(n.removeprefix("fmc_"), la(by_port[n], "i")) for n, _ in FMC_INPUTS_LA],
                     *[Subsignal(n.removeprefix("fmc_"), la([s], "i")) for n, s in FMC_INPUTS_CLK.items()],
                     Attrs(IOSTANDARD="LVCMOS25")),
        ]
        connectors = [
            # amaranth Pmod convention: 12 positions, 5/6/11/12 are power
            Connector("pmod", 1, " ".join(PMOD1[:4] + ["-", "-"] + PMOD1[4:] + ["-", "-"])),
            Connector("fmc_hpc", 0, {k: v[0] for k, v in FMC_HPC.items()}),
        ]

    return ZC706Platform


def __getattr__(name):
    if name == "ZC706Platform":
        return _platform_class()
    raise AttributeError(name)


if __name__ == "__main__":
    import sys
    sys.stdout.write(xdc())
