"""Post-training quantization exporter (not yet implemented)."""
