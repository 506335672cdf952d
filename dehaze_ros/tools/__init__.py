"""Tools around the node: the demo (`make demo`), the latency benchmark, offline bag processing,
the visibility check, and the process supervision the demo and the tests share."""
