"""Contrail web: JSON API, OTLP/HTTP receiver, dashboard and metrics."""


def __getattr__(name):  # lazy, so importing a submodule does not build the whole app machinery
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
