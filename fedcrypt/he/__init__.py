"""CKKS homomorphic aggregation through TenSEAL (extra ``he``). In progress."""
