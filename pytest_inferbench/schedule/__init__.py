"""Placement: the two-tier (host, then device) xdist scheduler, its policy and simulator,
follower facts and device leases."""
