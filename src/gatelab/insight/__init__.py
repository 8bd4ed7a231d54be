"""Insight into the gates: statistics, ablations, explain and the HTML report."""
