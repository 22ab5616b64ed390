"""parafeed app."""
