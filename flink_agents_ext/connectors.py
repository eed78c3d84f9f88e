"""Flink connector jars for PyFlink pipelines, fetched from Maven Central on first use.

PyFlink ships no connector jars: a pipeline that uses ``KafkaSource``/``KafkaSink`` needs the
connector on ``pipeline.jars``. :func:`connector_jar` fetches it once into the Maven cache of
:mod:`flink_agents_ext.maven` (outside the repository) and returns its path;
:func:`flink_agents_ext.configure_environment` adds it to ``pipeline.jars`` when asked
(``connectors=["kafka"]``).

``kafka`` is ``flink-sql-connector-kafka`` (the connector with the Kafka client shaded into
one jar, the form PyFlink documents). Its newest release, 5.0.0-2.2, is built against
Flink 2.2; this package runs it on Flink 2.3.0 (the README says what was checked).

Environment:
    ``FAE_KAFKA_CONNECTOR_JAR``: use this jar instead (e.g. a pre-fetched copy on a machine
    without Maven).
"""

from __future__ import annotations

import os
from pathlib import Path

from flink_agents_ext import maven

#: Maven coordinates of each connector this package knows.
CONNECTORS: dict[str, str] = {
    "kafka": "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2",
}
_OVERRIDES = {"kafka": "FAE_KAFKA_CONNECTOR_JAR"}


def connector_jar(name: str) -> Path:
    """The path of connector ``name``'s jar, fetched with Maven the first time.

    Raises:
        ValueError: ``name`` is not in :data:`CONNECTORS`.
        FileNotFoundError: the override variable names a file that does not exist.
        flink_agents_ext.maven.MavenFetchError: Maven is missing or could not fetch it.
    """
    if name not in CONNECTORS:
        raise ValueError(f"unknown connector {name!r}; known: {', '.join(CONNECTORS)}")
    given = os.environ.get(_OVERRIDES[name])
    if given:
        path = Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"{_OVERRIDES[name]}={given}: no such file")
        return path.resolve()
    coordinates = CONNECTORS[name]
    artifact, version = coordinates.split(":")[1:]
    lib = maven.fetch(f"{artifact}-{version}", [coordinates], transitive=False)
    return lib / f"{artifact}-{version}.jar"
