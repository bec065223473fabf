"""The baselines, one file per method; installed as ``mcit_bench.baselines``.

Each module registers its method on import with ``@register_method``; copy one to write your own.
"""
