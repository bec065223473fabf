"""The reference CPU environment's lock (cpu.txt), shipped so a run can say whether it ran in it."""
