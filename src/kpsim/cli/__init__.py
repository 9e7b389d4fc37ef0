"""Layer 7: the ``kpsim`` command. Argument parsing and output only; no logic.

Each verb is a module in this package exposing ``register(subparsers)``; the
module's ``run(args)`` returns the exit status. ``main`` discovers verbs by module.
"""
