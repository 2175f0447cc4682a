"""The processes of an experiment, each started as `splitbench role <name> ...` by any
executor: source, server, link (the emulated network) and trainer (centralized)."""
