"""`giftgraph bench`: throughput, fan-out, memory and write benchmarks against real processes.

Not part of the installed package: the CLI puts the repository root on sys.path to import it.
"""
