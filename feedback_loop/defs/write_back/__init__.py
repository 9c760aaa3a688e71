"""Results written back to the stores the traces came from."""
