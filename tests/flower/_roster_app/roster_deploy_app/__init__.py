"""A test Flower app: fedcrypt SecAgg with a roster, an optional node to kill and an optional deviating server."""
