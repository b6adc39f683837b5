"""Vehicle layer: truck dynamics, powertrain and energy, drivers and controllers, V2V channel.

Imports nothing from the other convoy layers.
"""
