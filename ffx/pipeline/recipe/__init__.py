"""What to build: recipes (manifests), dataset layouts, splits, table schemas and keys."""
