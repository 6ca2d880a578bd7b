"""Native kernels: x @ W.T on a GGUF's own k-quant blocks (docs/kernels.md)."""
