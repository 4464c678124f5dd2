"""fedsilo bench: Flower's SecAgg+ workflow beside plain FedAvg on a 1M-parameter model."""
