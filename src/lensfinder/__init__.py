"""lensfinder: a Snakemake-orchestrated search for strong gravitational lenses in the
DESI Legacy Imaging Surveys (fluxes in nanomaggies, coordinates in degrees, bands g, r, z)."""

__version__ = "0.1.0"
