"""Sample data in the landing format, for the demo, the tests and the benchmark (not pipeline logic)."""
