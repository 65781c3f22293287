"""Training and evaluation recipes on accelerate: classifier head, connectors, sweeps, the demo build."""
