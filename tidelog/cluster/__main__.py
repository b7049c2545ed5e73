"""``python -m tidelog.cluster CONFIG_JSON``: the background supervisor of ``tidelog cluster up
--detach`` (see :func:`tidelog.cluster.run.daemon`).

``python -m tidelog.cluster gateway DATA_DIR ARGS...``: the cluster's HTTP gateway, ``tidelog
gateway ARGS...``; DATA_DIR is unused but names the process as the cluster's (how ``down`` after
a dead supervisor, and the tests, recognise its processes by their command line).
"""

import sys

if sys.argv[1:2] == ["gateway"]:
    from tidelog.cli.main import app

    app(args=["gateway", *sys.argv[3:]], prog_name="tidelog")
else:
    from .run import daemon

    sys.exit(daemon(sys.argv[1:]))
