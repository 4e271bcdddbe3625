raise RuntimeError("database URL is not configured")
