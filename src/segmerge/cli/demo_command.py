"""``segmerge demo``: placeholder registered until the benchmark demo lands."""
