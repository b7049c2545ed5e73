"""The supervisor behind ``tidelog cluster``: starts etcd and N broker processes, watches them,
and steers them from a console or through a control socket (docs/CLUSTER.md, "Running a
cluster"). Talks to brokers through :mod:`tidelog.client` and to etcd through
:mod:`tidelog.etcd`; never imports the server.
"""

from . import render
from .config import ClusterConfig, ClusterConfigError
from .preflight import ClusterError
from .supervisor import BrokerState, Supervisor

__all__ = [
    "render",
    "BrokerState",
    "ClusterConfig",
    "ClusterConfigError",
    "ClusterError",
    "Supervisor",
]
