"""The (pure) routing engine: desired state in, kernel operations out."""
