"""Fault matrix under load: faults injected one at a time into a supervised stack while clients
keep generating; invariants checked for every request after each fault (issue 10 §2)."""
