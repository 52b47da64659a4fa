"""One module per `star` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
