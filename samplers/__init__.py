"""parafeed samplers."""
