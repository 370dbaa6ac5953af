"""Pairwise-masking secure aggregation (SecAgg, SecAgg+). See the secagg issue; in progress."""
