"""ltd: learned speculative decoding."""
