"""vcube: a virtual Zarr datacube over an archive of netCDF4/HDF5 files, committed to Icechunk."""

__version__ = "0.1.0"
