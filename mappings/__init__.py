"""Compression and placement passes (imported as ``chipforge.mappings``)."""
