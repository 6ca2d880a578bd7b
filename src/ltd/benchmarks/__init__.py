"""Benchmarks of the machine rather than of the methods: how fast the decoder runs (decode_speed) and
how fast the replay environments step (env_speed)."""
