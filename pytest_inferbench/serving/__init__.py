"""Serving systems: launchers for servers the harness starts, and KServe v2 clients."""
