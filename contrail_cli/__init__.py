"""The ``contrail`` command line and ``contrail up``, above the tracer, the collector and the web app.

``main`` holds the root command and its table of subcommands; ``up`` the
process supervisor that runs the whole stack (and the demo system) on one
machine.
"""
