"""History mode's defaults, importable without numpy or scipy (the plugin reads them)."""

MIN_RUNS = 5        # earlier runs a cell needs before history mode judges it
WINDOW = 30         # at most this many earlier runs, since the last change point
