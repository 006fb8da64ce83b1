"""Former location of :mod:`jaxinterp.polytope.boundary`; kept so existing imports keep working.

New code imports from :mod:`jaxinterp.polytope.boundary` (or :mod:`jaxinterp.polytope`).
"""

from jaxinterp.polytope.boundary import BoundaryDistances, boundary_density, boundary_distances, sketch_relative_std

__all__ = ["BoundaryDistances", "boundary_density", "boundary_distances", "sketch_relative_std"]
