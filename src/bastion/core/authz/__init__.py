"""Authorization: the sans-I/O model (stand-in package file until authz-core lands)."""
