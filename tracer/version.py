"""The installed distribution's version: the instrumentation scope version of Contrail's tracer and meter."""

try:
    from importlib.metadata import version as _dist_version

    VERSION = _dist_version("contrail-tracing")
except Exception:  # running from a source tree
    VERSION = "0.0.0"
