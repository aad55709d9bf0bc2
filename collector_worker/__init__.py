"""Contrail collector: consumes the span stream, stores, assembles and aggregates traces."""
