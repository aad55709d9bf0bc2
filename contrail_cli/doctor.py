"""``contrail doctor`` as the command line offers it: the collector's checks, plus finding the Redis that
``contrail up`` runs when no Redis URL is configured (the collector package knows nothing of ``contrail up``),
with the web app's settings (which include the collector's and the tracer's) so ``--settings`` lists all."""

from __future__ import annotations

from collector_worker.doctor import doctor_command
from web.settings import WebSettings

from .embedded_redis import embedded_redis

doctor = doctor_command(local_redis=embedded_redis, settings_class=WebSettings)
