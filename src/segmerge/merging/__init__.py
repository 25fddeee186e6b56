"""Merge maths: pure functions on tensors and key names, no file or CLI knowledge."""
