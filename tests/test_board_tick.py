"""tb/cosim/board_tick.py: the ZC706 board's tick lengths measured on the PHY RTL, against the PHY's
documented schedule (rtl/pe_fmc.py): every PE whose codes are read back adds its up beats, the
first one also the read round trip of the registered pins (FPGA out, board, FPGA in: 3 cycles)."""


def test_tick_lengths_follow_the_phy_schedule():
    from golden import weights
    from tb.cosim import board_tick, sim_top
    ctrl = sim_top.build_controller(weights.load())
    ctrl.programming.silence()
    ctrl._MustUse__silence = True
    ticks = board_tick.tick_table(ctrl, 3)
    phy = board_tick.board_phy(ctrl)
    phy._MustUse__silence = True
    ub = phy.up_beats                                    # 257 bits of a PE's up word in 32-bit beats: 9
    assert ub == 9
    # no conversion: capture, 8 PEs + aux port written, apply, guard, pre, tick (at least the 8 beats)
    assert ticks[0] >= 1 + 8 + 1 + 4 + 2
    assert ticks[1] - ticks[0] == ub + 3
    assert ticks[2] - ticks[1] == ticks[3] - ticks[2] == ub
