"""The `webevolver` command line: the user's entry point."""
