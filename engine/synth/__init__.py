"""Synthetic chest CT phantoms with known ground truth: anatomy in millimetres, the 18 CT-RATE
findings planted on request, CT-RATE-style reports and a dataset writer (`rad3d synth`)."""

from engine.synth.case import SynthCase, generate_case

__all__ = ["SynthCase", "generate_case"]
