"""Curation: filters that each state a verdict and reason; the shared base records every decision."""
