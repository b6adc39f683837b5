"""Service layer: HTTP API, MQTT vehicle link, storage, dashboard, auth.

May import every layer but ``convoy.cli``.
"""
