"""A test-only app whose clients fail on purpose: raising, hanging, or killing the process."""
