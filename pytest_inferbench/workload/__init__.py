"""Load: arrival processes, scenarios (closed loop, open loop, concurrency, rate searches), the
driver that measures a system under test with them, and generative issuing and metrics."""
