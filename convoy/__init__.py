"""convoy: an open vehicle-road-cloud platform for hybrid-intelligence heavy-truck platoons.

Layers (imports point one way, each uses only those above it):
``vehicle`` -> ``road`` -> ``sim`` -> ``cloud`` -> ``service`` -> ``cli``.
"""

__version__ = "0.1.0"
