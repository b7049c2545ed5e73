"""Replication (docs/CLUSTER.md, "Replication"): the leader's view of its followers
(:mod:`.leader`), the follower's fetchers (:mod:`.fetcher`) over a connection of the broker's
own (:mod:`.peer`), the leader's answers to them (:mod:`.serving`), and the
:class:`~.manager.ReplicaManager` that follows the cluster's view."""
