"""Compute: data parallelism under torchrun (``distributed``, ``collectives``) and bf16/compile/TF32
(``acceleration``)."""
