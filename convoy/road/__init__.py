"""Road layer: road geometry and grade, networks, routing, roadside units, V2X messages, weather.

May import ``convoy.vehicle`` only.
"""
