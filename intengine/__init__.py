"""Integer-only inference engine (not yet implemented)."""
