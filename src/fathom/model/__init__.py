"""Model: where the weights come from, loading (device, dtype, attention, quantization), LoRA, loss."""
