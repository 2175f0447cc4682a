"""The `splitbench` command: one subcommand per module, each with add_parser() and run()."""
