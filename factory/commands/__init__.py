"""One module per `factory` subcommand."""
