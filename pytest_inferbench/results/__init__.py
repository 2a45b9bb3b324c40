"""Run files (one JSON document per session, the exchange format other tools read) and the
terminal summary table."""
