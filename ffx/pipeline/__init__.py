"""The build pipeline: one module per stage, tables in the build directory between them."""
