"""parafeed models."""
