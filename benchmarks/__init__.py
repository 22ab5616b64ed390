"""parafeed benchmarks."""
