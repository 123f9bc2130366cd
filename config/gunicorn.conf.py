"""gunicorn settings for the radseg web app, as docs/operations.md ("Running the web app")
recommends::

    gunicorn -c config/gunicorn.conf.py 'radseg.web:create_app()'

It expects a reverse proxy on the same machine that terminates TLS and buffers slow clients
(nginx, Caddy). Options given on the command line win over this file, e.g.
``--bind 0.0.0.0:5000`` in a container or ``--workers 8``. tests/meta/test_config_example.py
checks every name here with gunicorn's own settings.
"""

import os

# Only the reverse proxy on this machine connects to the app.
bind = "127.0.0.1:8000"

# One synchronous worker per core (the cores this process may use, as `nproc` counts them).
# Synchronous workers give the viewer's images the lowest tail latency: 20 clients scrolling on
# 2 cores got p95 45 ms with 2 workers x 1 thread, 67 ms with 2 workers x 4 threads, whose threads
# take turns on one interpreter lock (docs/benchmarks.md). Each worker builds its own platform.
workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

# 1: gunicorn's sync worker. With no buffering proxy in front, or for many slow clients, use
# threads = 4 (gunicorn then runs its gthread worker).
threads = 1

# Seconds a worker may spend on one request before gunicorn kills and restarts it. Images take
# milliseconds, but an upload's zips are unpacked inside its request (up to upload_max_bytes in,
# archive_max_unpacked_bytes out), which can take minutes: gunicorn's default of 30 s would kill
# a large upload half-way. Raise it with those settings.
timeout = 300

# Trust X-Forwarded-Proto (https) only from the proxy on this machine. This sets the request's
# scheme, not its address: for the address (login throttling) wrap the app in werkzeug's
# ProxyFix, as docs/operations.md says.
forwarded_allow_ips = "127.0.0.1,::1"
