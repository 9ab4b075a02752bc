"""The product's co-simulation: what `mcnn sim`, `mcnn bench` and `mcnn board --sim --device
cosim|controller` run (sw/cli.py reaches it through commands.py). The tests are tb/test_*.py.

  commands.py          the CLI commands' co-simulation side (run, print the report)
  sim_top.py           SimTop: the controller RTL + 8 HDL array models (hdl/pe_model.v), its cocotb
                       helpers (load cells, feed images, collect results, serve programming)
  sim_main.py          cocotb session of `mcnn sim`: transfer, inference, hybrid training vs golden
  replicated_cosim.py  SimTop around the replicated-convolver controller; replicated_main.py its session
  link_cosim.py        the Verilated link (rtl/link.py) behind sw.transport.SimTransport
  host_cosim.py        link + host bridge + controller + array models, driven by the host driver
"""
