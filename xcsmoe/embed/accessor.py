"""The ``ds.csmoe`` accessor (filled in with the embedding issue)."""
