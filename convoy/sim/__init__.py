"""Simulation layer: state as arrays, compiled step kernels, backends, scenarios and outputs.

May import ``convoy.vehicle`` and ``convoy.road``.
"""
