"""The central side: job lifecycle, registry, result store."""
