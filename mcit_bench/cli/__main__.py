"""``python -m mcit_bench.cli``: what launchers (torchrun, accelerate launch) start."""

from mcit_bench.cli import main

main()
