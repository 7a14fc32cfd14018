"""Benchmarks of vcube against VirtualiZarr and kerchunk (`make bench`; see bench/README.md)."""
