"""The ``contrail`` command: the root group that assembles every package's subcommands.

This package sits above ``tracer``, ``collector_worker`` and ``web`` (and the
demo), so it may name them all; none of them imports it. Subcommands live
beside what they run and are imported only when invoked, so ``contrail
--help`` is fast and a subcommand whose extras are missing says which ones.
"""

from __future__ import annotations

import importlib
import sys

import click

# name -> "module:attribute" of a click command; imported on first use.
COMMANDS = {
    "up": ("contrail_cli.up:up", "Run Redis, a collector and the web app on this machine."),
    "web": ("web.server:web", "Serve the API, OTLP receiver and dashboard with gunicorn."),
    "collector": ("collector_worker.commands:collector", "Consume the span stream into storage."),
    "cleanup": ("collector_worker.commands:cleanup", "Delete data older than the retention period."),
    "traces": ("collector_worker.read_commands:traces", "List and show stored traces."),
    "services": ("collector_worker.read_commands:services", "List services and their operations."),
    "stats": ("collector_worker.read_commands:stats", "Latency and error statistics per operation."),
    "deps": ("collector_worker.read_commands:deps", "Service dependency edges."),
    "report": ("collector_worker.period_report:report", "Write a self-contained HTML report of a period."),
    "profile": ("collector_worker.profile_commands:profile", "Merged sampling profiles of an operation."),
    "db": ("collector_worker.db_commands:db", "Show or upgrade the trace database's schema revision."),
    "doctor": ("contrail_cli.doctor:doctor", "Check Redis, the database and the collectors' backlog."),
    "demo": ("contrail_demo.cli:demo", "Send demo traffic to a running stack."),
}

# Exit codes a script can rely on.
EXIT_OK = 0
EXIT_ERROR = 1  # the operation failed (unreachable service, unknown id, ...)
EXIT_USAGE = 2  # bad arguments (click's own convention)


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            if missing and missing.split(".")[0] in ("tracer", "collector_worker", "web", "contrail_cli", "contrail_demo"):
                raise
            raise click.ClickException(
                f"'contrail {name}' needs the server extras ({missing} is missing): "
                "pip install 'contrail-tracing[all]'"
            ) from None
        return getattr(module, attribute)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="contrail-tracing", prog_name="contrail")
def cli():
    """Contrail: distributed tracing for HTTP services and Celery workers."""


def main(argv=None):
    return cli.main(args=argv, prog_name="contrail")


if __name__ == "__main__":
    sys.exit(main())
