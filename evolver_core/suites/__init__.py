"""Task suites: where tasks come from, how an episode starts, and how it is scored."""
