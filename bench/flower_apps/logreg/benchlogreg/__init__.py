"""fedsilo bench: Flower logistic-regression app."""
