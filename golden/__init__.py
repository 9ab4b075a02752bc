"""Golden model of mcnn: the NumPy specification the RTL is checked against."""
