"""Ways to decide which channels live: L1-magnitude ranking (no data) and learned gates."""
