"""fedsilo bench: Flower no-op app."""
