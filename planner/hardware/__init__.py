"""Hardware: the sourced device catalog and the live probe."""
