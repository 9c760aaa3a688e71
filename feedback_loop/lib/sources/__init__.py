"""Trace stores and feedback stores, mapped onto the input contract (one module per kind of store)."""
