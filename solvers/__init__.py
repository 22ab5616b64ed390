"""Fixed-point solvers for lower-triangular systems. They know nothing about networks.

from solvers import solve
result = solve(step, x0, method="jacobi")   # result.x, .iterations, .converged, .evaluations
"""

from solvers.batch import FixedPointBatch, Schedule
from solvers.pieces import drain
from solvers.result import SolveResult
from solvers.schedule import METHODS
from solvers.solve import solve, solve_backward, solving, solving_backward
from solvers.step import Step

__all__ = [
    "METHODS",
    "FixedPointBatch",
    "Schedule",
    "SolveResult",
    "Step",
    "drain",
    "solve",
    "solve_backward",
    "solving",
    "solving_backward",
]
