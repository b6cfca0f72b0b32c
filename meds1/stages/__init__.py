"""One module per stage; each exposes `run(cfg: Config) -> dict` (the record it adds to the registry)."""
