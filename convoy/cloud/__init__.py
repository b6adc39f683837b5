"""Cloud layer: orders, fleet, dispatch, platoon formation, charging, supervision, KPIs.

May import ``convoy.vehicle``, ``convoy.road`` and ``convoy.sim``.
"""
