"""The worker daemon's own ``/metrics`` port, for a daemon on a host without the API.

On a host where the API runs too, the API's ``/metrics`` already shows the daemon's counters
(they share ``PROMETHEUS_MULTIPROC_DIR``), and this port is not needed. Elsewhere, set
``BOXOFFICE_DAEMON_METRICS_PORT`` and scrape it: the daemon's counters (holds expired by the
sweeper, refunds paid back, payments failed in reconciliation...), or with a shared folder,
every process's of that host. The gauges read from PostgreSQL and Redis (outbox, queues) are
the API's to report, once for the whole system.

Served by prometheus_client's own HTTP server on a daemon thread: it never runs a job's code
and never waits on Redis or PostgreSQL.
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from booking import metrics

log = logging.getLogger("boxoffice.worker")


def serve_metrics(host: str, port: int) -> bool:
    """Listen on ``host:port`` for scrapes, from a background thread, until the process
    exits. Returns whether it listens: a port already taken (a second daemon on the host)
    is logged and the daemon works on without one."""
    try:
        start_http_server(port, addr=host, registry=metrics.scrape_registry())
    except OSError as error:
        log.warning("metrics: cannot listen on %s:%s (%s); this daemon serves none", host, port, error)
        return False
    return True
