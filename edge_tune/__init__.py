"""edge_tune: search compression parameters for the lowest latency measured on an edge device."""

__version__ = "0.1.0"
