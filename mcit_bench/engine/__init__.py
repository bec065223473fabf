"""The run: its phases (engine/run.py), the training loop, generation, FSDP2 sharding and the memory
model. The only floor that holds a model in memory while it trains."""
