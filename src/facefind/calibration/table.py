"""Calibration tables: score -> FMR / FNMR, where the data supports it, and the verdict bands."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from facefind.calibration.tail import TailModel
from facefind.errors import FaceFindError
from facefind.pipeline.models import ARCFACE_MBF

# Verdict bands, by false match rate (documented in the README).
STRONG_MAX_FMR = 1e-5
POSSIBLE_MAX_FMR = 1e-3
WEAK_MAX_FMR = 1e-2
# An FMR estimate is trusted where at least this many impostor pairs scored that high.
MIN_IMPOSTOR_COUNT = 10
SCORE_GRID = np.round(np.arange(-0.3, 1.0001, 0.005), 3)


VERDICTS = ("strong", "possible", "weak", "not a match")  # strongest first
# A pair with a poor face (poor probe, covered face showing too little, not a usable face) says at most this.
POOR_PAIR_MAX_VERDICT = "weak"


def verdict_for_fmr(fmr: float, max_verdict: str = "strong") -> str:
    """strong / possible / weak / not a match, by the FMR the score carries, at most ``max_verdict``."""
    if fmr <= STRONG_MAX_FMR:
        verdict = "strong"
    elif fmr <= POSSIBLE_MAX_FMR:
        verdict = "possible"
    elif fmr <= WEAK_MAX_FMR:
        verdict = "weak"
    else:
        verdict = "not a match"
    return max(verdict, max_verdict, key=VERDICTS.index)


@dataclass(frozen=True)
class MatchEvidence:
    """What a score means under a table."""

    fmr: float
    fmr_is_bound: bool  # True: beyond what the calibration data can resolve; the true FMR is at most this
    fnmr: float
    verdict: str
    table: str
    fmr_interval: tuple[float, float] = (0.0, 1.0)  # 95%; fmr is its upper end where the table has intervals
    # "measured": read off the impostor data; "tail_model": extrapolated beyond it (calibration/tail.py);
    # "bound": beyond what even the tail model is trusted for (fmr is an upper bound)
    fmr_source: str = "measured"


@dataclass
class CalibrationTable:
    """Score -> FMR and FNMR on a grid, plus the counts behind them."""

    name: str
    scores: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray
    impostor_pairs: int
    genuine_pairs: int
    description: str = ""
    fmr_multiplier: float = 1.0  # >1 widens claims where the held-out check showed them too optimistic
    match_mode: str = "plain"  # covered probes: how they were matched when this table was fitted
    max_verdict: str = "strong"  # the strongest verdict a pair scored with this table may get (not stored)
    # Pooled tables (calibration/pooled.py): fmr is the upper end of a 95% interval whose lower end is
    # fmr_low, fmr_point the point estimate, resolved_until the last score the data resolves.
    fmr_low: np.ndarray | None = None
    fmr_point: np.ndarray | None = None
    resolved_until: float | None = None
    domain_shift: float = 0.0  # in-the-wild minus LFW impostor score shift used for the tail
    tail: TailModel | None = None  # extrapolates the FMR beyond max_supported_score, down to its floor

    @classmethod
    def fit(
        cls, name: str, genuine: np.ndarray, impostor: np.ndarray, description: str = "", match_mode: str = "plain"
    ) -> "CalibrationTable":
        impostor = np.sort(impostor.astype(np.float64))
        genuine = np.sort(genuine.astype(np.float64))
        at_or_above = len(impostor) - np.searchsorted(impostor, SCORE_GRID, side="left")
        below = np.searchsorted(genuine, SCORE_GRID, side="left")
        return cls(
            name=name,
            scores=SCORE_GRID.copy(),
            fmr=at_or_above / max(len(impostor), 1),
            fnmr=below / max(len(genuine), 1),
            impostor_pairs=len(impostor),
            genuine_pairs=len(genuine),
            description=description,
            match_mode=match_mode,
        )

    @property
    def min_supported_fmr(self) -> float:
        """The smallest FMR the data resolves (MIN_IMPOSTOR_COUNT impostor pairs at or above the score)."""
        if self.resolved_until is not None:
            return float(self._claimed_at(self.resolved_until))
        return MIN_IMPOSTOR_COUNT / max(self.impostor_pairs, 1) * self.fmr_multiplier

    @property
    def max_supported_score(self) -> float:
        """Above this score the FMR is only an upper bound."""
        if self.resolved_until is not None:
            return self.resolved_until
        supported = np.nonzero(self.fmr * self.impostor_pairs >= MIN_IMPOSTOR_COUNT)[0]
        return float(self.scores[supported[-1]]) if len(supported) else float(self.scores[0])

    def evidence(self, score: float) -> MatchEvidence:
        fmr, bound = self.fmr_at(score)
        return MatchEvidence(fmr=fmr, fmr_is_bound=bound, fnmr=self.fnmr_at(score),
                             verdict=verdict_for_fmr(fmr, self.max_verdict), table=self.name,
                             fmr_interval=self.fmr_interval_at(score), fmr_source=self.fmr_source_at(score))

    def fmr_source_at(self, score: float) -> str:
        """Where the FMR at ``score`` comes from: measured, tail_model or bound (see MatchEvidence)."""
        if score < self.max_supported_score:
            return "measured"
        return "tail_model" if self.tail is not None and not self.fmr_at(score)[1] else "bound"

    def fmr_interval_at(self, score: float) -> tuple[float, float]:
        """The 95% interval of the FMR at ``score``; (0, bound) beyond the resolved range.

        Tables without intervals (fitted before pooled calibration) give (claimed, claimed)."""
        claimed, bound = self.fmr_at(score)
        if bound:
            return 0.0, claimed
        if self.tail is not None and score >= self.max_supported_score:
            return self.tail.fmr_low(score), claimed
        if self.fmr_low is None:
            return claimed, claimed
        low = 10 ** float(np.interp(score, self.scores, np.log10(np.clip(self.fmr_low, 1e-12, 1.0))))
        return min(low, claimed), claimed

    def _claimed_at(self, score: float) -> float:
        logs = np.log10(np.clip(self.fmr * self.fmr_multiplier, 1e-12, 1.0))
        return 10 ** float(np.interp(score, self.scores, logs))

    def _sparse_at(self, score: float) -> float:
        """The point estimate from the few (< MIN_IMPOSTOR_COUNT) impostor pairs beyond the resolved range,
        with the table's margin: the tail model never claims less than the data it has (0 where none)."""
        point = self.fmr_point if self.fmr_point is not None else self.fmr
        value = 10 ** float(np.interp(score, self.scores, np.log10(np.clip(point, 1e-12, 1.0))))
        return value * self.fmr_multiplier if value > 1e-12 else 0.0

    def fmr_at(self, score: float) -> tuple[float, bool]:
        """(FMR, is_bound): log-linear between grid points; beyond the supported range the tail model's
        extrapolation, and an upper bound beyond its floor (or beyond the data, for a table without one)."""
        limit = self.max_supported_score
        if score >= limit and self.tail is not None:
            sparse = self._sparse_at(score)
            return max(self.tail.fmr(score), sparse), self.tail.is_beyond_floor(score) and sparse <= self.tail.floor_fmr
        if score >= limit:
            return self.min_supported_fmr, True
        return min(1.0, max(self._claimed_at(score), self.min_supported_fmr)), False

    def fnmr_at(self, score: float) -> float:
        return float(np.interp(score, self.scores, self.fnmr))

    def threshold_for_fmr(self, fmr: float) -> float:
        """The lowest score whose FMR is at most ``fmr`` (below the supported range: the tail model's
        score for it, down to its floor; without one, the supported limit)."""
        adjusted = self.fmr * self.fmr_multiplier
        ok = np.nonzero(adjusted <= fmr)[0]
        if fmr < self.min_supported_fmr and self.tail is not None:
            modelled = self.tail.score_for(fmr)
            beyond = [s for s in self.scores if s >= modelled and self._sparse_at(float(s)) <= fmr]
            return max(modelled, float(beyond[0])) if beyond and self._sparse_at(modelled) > fmr else modelled
        if fmr < self.min_supported_fmr or len(ok) == 0:
            return self.max_supported_score
        return float(self.scores[ok[0]])

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "impostor_pairs": self.impostor_pairs,
            "genuine_pairs": self.genuine_pairs,
            "fmr_multiplier": self.fmr_multiplier,
            "match_mode": self.match_mode,
            "min_supported_fmr": self.min_supported_fmr,
            "max_supported_score": self.max_supported_score,
            "scores": [float(s) for s in self.scores],
            "fmr": [float(f"{v:.6g}") for v in self.fmr],
            "fnmr": [float(f"{v:.6g}") for v in self.fnmr],
            **({} if self.fmr_low is None else {
                "resolved_until": self.resolved_until,
                "domain_shift": self.domain_shift,
                "fmr_low": [float(f"{v:.6g}") for v in self.fmr_low],
                "fmr_point": [float(f"{v:.6g}") for v in self.fmr_point],
            }),
            **({} if self.tail is None else {"tail": self.tail.to_dict()}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CalibrationTable":
        return cls(
            name=data["name"],
            scores=np.asarray(data["scores"], dtype=np.float64),
            fmr=np.asarray(data["fmr"], dtype=np.float64),
            fnmr=np.asarray(data["fnmr"], dtype=np.float64),
            impostor_pairs=int(data["impostor_pairs"]),
            genuine_pairs=int(data["genuine_pairs"]),
            description=data.get("description", ""),
            fmr_multiplier=float(data.get("fmr_multiplier", 1.0)),
            match_mode=data.get("match_mode", "plain"),
            fmr_low=np.asarray(data["fmr_low"], dtype=np.float64) if "fmr_low" in data else None,
            fmr_point=np.asarray(data["fmr_point"], dtype=np.float64) if "fmr_point" in data else None,
            resolved_until=data.get("resolved_until"),
            domain_shift=float(data.get("domain_shift", 0.0)),
            tail=TailModel.from_dict(data["tail"]) if "tail" in data else None,
        )


@dataclass
class CalibrationSet:
    """The tables for one recogniser, with where they came from and how well they held up."""

    model_id: str
    tables: dict[str, CalibrationTable]
    provenance: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)

    def table_for(self, probe_quality: str, covered: bool = False) -> CalibrationTable:
        """The table that matches the probe: covered and low-quality probes get their own, wider ones.

        A poor face cannot support an identification whatever its score, so the table returned for one
        caps its verdicts at POOR_PAIR_MAX_VERDICT.
        """
        if covered and "covered" in self.tables:
            table = self.tables["covered"]
        elif probe_quality == "poor" and "low_quality" in self.tables:
            table = self.tables["low_quality"]
        elif probe_quality == "fair" and "fair" in self.tables:
            table = self.tables["fair"]
        else:
            table = self.tables["standard"]
        return replace(table, max_verdict=POOR_PAIR_MAX_VERDICT) if probe_quality == "poor" else table

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model_id": self.model_id,
            "provenance": self.provenance,
            "checks": self.checks,
            "tables": {name: table.to_dict() for name, table in self.tables.items()},
        }
        path.write_text(json.dumps(payload, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "CalibrationSet":
        data = json.loads(Path(path).read_text())
        return cls(
            model_id=data["model_id"],
            tables={name: CalibrationTable.from_dict(t) for name, t in data["tables"].items()},
            provenance=data.get("provenance", {}),
            checks=data.get("checks", {}),
        )


def shipped_table_file(model_id: str) -> Path:
    """Where the tables for a shipped recogniser live: ``data/<model file name>.json``."""
    return Path(str(resources.files("facefind.calibration").joinpath("data", f"{model_id.split(':')[0]}.json")))


@cache
def default_calibration(model_id: str = ARCFACE_MBF.model_id) -> CalibrationSet:
    """The tables shipped with facefind for one of its recognisers."""
    path = shipped_table_file(model_id)
    if not path.is_file():
        raise FaceFindError(f"no calibration is shipped for {model_id}: run `facefind calibrate`", reason="no_calibration")
    calibration = CalibrationSet.load(path)
    if calibration.model_id != model_id:
        raise FaceFindError(f"the shipped calibration {path.name} is for {calibration.model_id}, not {model_id}",
                            reason="no_calibration")
    return calibration


def format_fmr(evidence: MatchEvidence) -> str:
    """'1 in 2.3M' style, with '<' for bounds."""
    one_in = 1 / max(evidence.fmr, 1e-300)
    prefix = "< " if evidence.fmr_is_bound else ""
    if one_in >= 1e6:
        text = f"1 in {one_in / 1e6:.1f}M"
    elif one_in >= 1e3:
        text = f"1 in {one_in / 1e3:.1f}k"
    else:
        text = f"1 in {math.floor(one_in)}"
    return prefix + text
