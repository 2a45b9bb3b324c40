"""The bottom layer: what every other layer may use and nothing here imports from above.
Errors a user sees, durations, percentiles with their confidence bounds, LoadGen's early
stopping, the capacity search's step plan, the gate's thresholds and verdict rules, input
signatures and the Result model. Pure computation, no clocks, no runtimes."""
