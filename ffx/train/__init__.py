"""Training and evaluating MCX-API on ffx shards."""
