"""The MQTT vehicle link: topic scheme, payloads, ingest workers, simulated vehicles, ACLs.

* ``topics``: the versioned topic scheme (``convoy/v1/...``), builders and a parser.
* ``messages``: the payloads (pydantic), their JSON schemas and ``decode``.
* ``ingest``: :class:`~convoy.service.mqtt.ingest.Ingest`, a worker on a shared subscription
  that validates states and hands them in batches to a sink before acknowledging them.
* ``agent``: simulated trucks publishing their state as real vehicles would.
* ``acl``: per-vehicle credentials, Mosquitto's password and ACL files, a broker config.
* ``bench``: the ingest benchmark (not a test).

``ingest``, ``agent`` and ``bench`` need ``paho-mqtt`` (the ``service`` extra); this package
and ``topics``, ``messages`` and ``acl`` import without it.
"""
