"""Calibration: turning a raw cosine score into a false match rate a person can act on.

A :class:`CalibrationTable` maps score -> FMR (how often two *different*
people score at least this high) and score -> FNMR (how often the *same*
person scores below it), measured on labelled faces and shipped with its
provenance. Separate tables exist per probe condition (clean, low quality);
the search picks the one that matches the probe.
"""

from facefind.calibration.table import (
    CalibrationSet,
    CalibrationTable,
    MatchEvidence,
    default_calibration,
    verdict_for_fmr,
)

__all__ = ["CalibrationSet", "CalibrationTable", "MatchEvidence", "default_calibration", "verdict_for_fmr"]
