"""Call recordings: ingest, index, search, playback and export, retention."""
