"""The PE-board interface: what the FPGA drives and reads for one PE (docs/pe_board.md).

Read path (one 128 x 16 1T1R array, its BL drivers, two sample-and-hold banks and 32 ADCs shared
4:1 through a MUX, as in Yao 2020's macro core, ED Fig. 5):
  bl[16]        BL read-pulse enables (0.2 V when high) of the current slot
  pulse         a read pulse is being applied (all WLs on, SLs clamped at 0 V)
  sh_sample     end of the pulse: S&H bank `sh_bank` captures every SL current
  adc_start     start a conversion round: ADC a converts SL 32*adc_sel + a of bank adc_bank
  adc_valid     the round's 32 codes are on adc_codes (ADC a in bits [8a, 8a+8))
Programming path (closed-loop write-verify, one cell at a time):
  prog_pulse    one SET/RESET pulse (prog_dir) on cell (prog_row, prog_bl)
  verify        one single-cell verify read of (prog_row, prog_bl) in the ADC's fine range;
                the code returns on verify_code with verify_valid
Transposed read (only with `transposed=True`: the board extension of issue 15, a BL-side ADC per
BL; golden/transposed_read.py): the read pulses go on the SLs (rows), the BLs are held at 0 V and
sensed, so a slot's BL current is the sum of the pulsed rows' cell currents (W^T e):
  sl_drive[128] SL (row) read-pulse enables (0.2 V when high) of the current slot
  t_pulse       a transposed read pulse is being applied (all WLs on, BLs clamped at 0 V)
  bl_sample     end of the pulse: every BL's S&H captures its current and its ADC starts; the
                ADC must be done before the next bl_sample (within one pulse)
  bl_valid      the codes of the last bl_sample are on bl_codes (BL j in bits
                [bl_code_bits*j, bl_code_bits*(j+1))); one bl_valid per bl_sample, in order
The transposed members are optional so that boards without the extension (the ZC706 top's FMC PHY
packs every member into its bus beats) keep their port and timing unchanged.
"""
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class PEBoardSignature(wiring.Signature):
    def __init__(self, n_bl=16, n_adc=32, code_bits=8, n_rows=128, transposed=False, bl_code_bits=8):
        sel_bits = max(1, (n_rows // n_adc - 1).bit_length())
        members = {
            "bl": Out(n_bl),
            "pulse": Out(1),
            "sh_sample": Out(1),
            "sh_bank": Out(1),
            "adc_start": Out(1),
            "adc_bank": Out(1),
            "adc_sel": Out(sel_bits),
            "adc_valid": In(1),
            "adc_codes": In(n_adc * code_bits),
        }
        if transposed:
            members.update({
                "sl_drive": Out(n_rows),
                "t_pulse": Out(1),
                "bl_sample": Out(1),
                "bl_valid": In(1),
                "bl_codes": In(n_bl * bl_code_bits),
            })
        super().__init__(members)
