"""The commands: index, extract, crop, shard, export, qa, build, status, build.json."""
