"""A test-only app whose protection is registered here, not in flwr-privshare."""
