"""Small models and checkpoints that segmerge builds itself (no downloads)."""
