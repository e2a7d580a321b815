"""MCX-API and its loss."""
