"""The Legacy Surveys' conventions and constants, defined once for every stage.

* Objects are keyed by ``KEY`` = (RELEASE, BRICKID, OBJID), never by row number.
* Optical bands are ordered g, r, z (``BANDS``); fluxes are AB nanomaggies
  (mag = 22.5 - 2.5 log10 flux); coordinates are ICRS degrees.
* Coadd images have ``PIXSCALE`` = 0.262 arcsec per pixel (north and south alike), read
  from HDU 1 of the ``.fits.fz`` files; pixel (x, y) = (column, row), 0-based; +x runs
  toward decreasing RA (East left), +y toward increasing Dec (North up). Geometry (image
  size, tangent point) is otherwise taken from the files, never from constants.
"""

KEY = ("RELEASE", "BRICKID", "OBJID")
BANDS = ("g", "r", "z")
PIXSCALE = 0.262  # arcsec per coadd pixel

BRICK_SIZE_DEG = 0.25
N_BRICK_ROWS = 721
# North (BASS/MzLS) iff Dec >= 32.375 deg and Galactic b > 0 (the viewer's and randoms' rule).
NORTH_DEC_MIN = 32.375

RELEASES = ("dr8", "dr9", "dr10")
REGIONS = ("south", "north")
# The REGION label of the objects table: the survey that imaged the object's own tree.
REGION_LABELS = {"south": "DECaLS", "north": "BASS-MzLS"}
# DR10 is DECam only: BASS/MzLS (north) data are in DR8 and DR9.
RELEASE_REGIONS = {"dr8": ("south", "north"), "dr9": ("south", "north"), "dr10": ("south",)}
SWEEP_VERSIONS = {"dr8": "8.0", "dr9": "9.0", "dr10": "10.1"}
# Sweep tiling: 10 x 5 deg for DR8/DR9, 5 x 5 deg for DR10.
SWEEP_RA_STEP = {"dr8": 10, "dr9": 10, "dr10": 5}
SWEEP_DEC_STEP = 5
# A_X / E(B-V) (SFD98 coefficients used by legacypipe, DR9/DR10), for g r i z W1-W4.
EXTINCTION_R = {"G": 3.214, "R": 2.165, "I": 1.592, "Z": 1.211, "W1": 0.184, "W2": 0.113, "W3": 0.0241, "W4": 0.0091}
