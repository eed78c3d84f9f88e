"""Packaging for flink-agents-ext."""

from setuptools import find_packages, setup

setup(
    name="flink-agents-ext",
    version="0.1.0",
    description=(
        "Durable, replay-safe execution of side-effecting actions per key for PyFlink, "
        "with checkpoint-driven callbacks and checkpoint-safe pruning."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.13",
    packages=find_packages(include=["flink_agents_ext", "flink_agents_ext.*"]),
    package_data={"flink_agents_ext": ["java/org/flinkagentsext/*.java", "py.typed"]},
    install_requires=[
        # The checkpoint bridge subclasses PyFlink's internal Java operators: pinned on purpose.
        "apache-flink==2.3.0",
        "pyyaml>=6",
    ],
    extras_require={
        "postgres": ["psycopg[binary]>=3.1,<4"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "ruff>=0.5",
                "mypy>=1.10", "hypothesis>=6.100"],
        "bench": ["matplotlib>=3.7,<3.10"],
        # The Kafka action store and the Kafka profile's producer and summary.
        "kafka": ["confluent-kafka>=2.6,<3"],
    },
)
