"""``python -m tidelog.cluster CONFIG_JSON``: the background supervisor of ``tidelog cluster up
--detach`` (see :func:`tidelog.cluster.run.daemon`)."""

import sys

from .run import daemon

sys.exit(daemon(sys.argv[1:]))
