"""tidelog: a Kafka-class event streaming broker and async client, in Python."""

__version__ = "0.1.0.dev0"
