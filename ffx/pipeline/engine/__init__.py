"""The stage engine and the build directory: ledger, parts, workers, locks, atomic writes."""
