"""Private implementation modules: not a stable API."""
