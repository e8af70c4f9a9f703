"""Services below the benchmarks: the request cache, data-parallel ranks and the request path."""
