"""Training-data tooling for melstream voices (offline: espeak-ng teacher data from a built-in corpus)."""
