"""Unblind a reader study with its key and summarise the scores: statistics, report, figure.

* Unblinding checks the key first: the SHA-256 of every image file and of the
  worklist must match what was planned, otherwise the summary is refused (a changed
  image means the scores may not belong to the method the key names).
* Per method and criterion: mean with a 95 % t interval (``scipy.stats.t``) over all
  readings (reader × item), and the distribution of the 1–5 scores.
* Each method against the original, within the same pair: Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon``, zero differences dropped) on the paired score
  differences of all readers, and per reader; the effect size is the matched-pairs
  rank-biserial correlation (Kerby 2014) of the same non-zero differences, ranked by
  ``scipy.stats.rankdata``: +1 when every non-zero difference favours the method.
  Readings of one pair by different readers are treated as independent in the pooled
  test; with few cases read the per-reader tests too.
* Preference counts per pair of methods, with an exact two-sided binomial test
  (``scipy.stats.binomtest``) of the wins, ties left out.
* Inter-reader agreement per criterion on every image read by several readers:
  quadratic-weighted Cohen's κ for two readers (``sklearn.metrics.cohen_kappa_score``)
  and Krippendorff's α, ordinal (the ``krippendorff`` package), for two or more.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..io import outputs
from . import protocol as p
from .plan import sha256_file
from .scores import ScoreFile, Study

__all__ = [
    "ALPHA",
    "Reading",
    "SummaryResult",
    "agreement",
    "load_key",
    "load_readings",
    "markdown_report",
    "mean_ci",
    "paired_test",
    "summarize_readings",
    "summarize_study",
    "summary_figure",
]


ALPHA = 0.05


# ---------------------------------------------------------------- unblinding


def load_key(folder: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The study's key after checking every image and the worklist against their planned SHA-256."""
    import hashlib

    folder = Path(folder)
    key_path = folder / p.KEY_DIR / p.KEY_FILE
    if not key_path.is_file():
        raise InputError(
            f"The key {key_path} is missing; put the study's key/ folder back (it was kept apart from the "
            "readers) before summarising."
        )
    key = p.read_json(key_path, "key")
    problems = []
    for relative, entry in key["images"].items():
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{relative} changed (SHA-256 differs from the plan)")
    worklist = folder / p.WORKLIST_FILE
    if not worklist.is_file():
        problems.append(f"{p.WORKLIST_FILE} is missing")
    elif hashlib.sha256(worklist.read_bytes()).hexdigest() != key.get("worklist_sha256"):
        problems.append(f"{p.WORKLIST_FILE} changed since planning")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InputError(
            f"Cannot unblind {folder}: {shown}. The scores may not belong to the images the key describes; "
            "restore the planned files (or re-plan and re-read the study)."
        )
    return key


@dataclass(frozen=True)
class Reading:
    """One reader's scores of one pair, unblinded."""

    reader: str
    item: str
    case: str
    methods: Tuple[str, str]  # method of image A, of image B
    scores: Tuple[Dict[str, int], Dict[str, int]]  # scores of A, of B
    preference: str  # "A", "B" or "equal"
    comment: str

    def preferred_method(self) -> Optional[str]:
        """The method the reader preferred, or None for 'equal'."""
        return {"A": self.methods[0], "B": self.methods[1]}.get(self.preference)


def load_readings(folder: Union[str, os.PathLike], key: Dict[str, Any]) -> Tuple[List[Reading], Dict[str, Any]]:
    """Every reader's last record per item, unblinded; and the completeness per reader."""
    study = Study(folder)
    readings: List[Reading] = []
    completeness = {}
    score_dir = Path(folder) / p.SCORES_DIR
    files = sorted(score_dir.glob("*.jsonl")) if score_dir.is_dir() else []
    unknown_readers = [f.stem for f in files if f.stem not in study.readers]
    if unknown_readers:
        raise InputError(
            f"Score files for readers not in the worklist: {', '.join(unknown_readers)}; they belong to another study."
        )
    for reader in study.readers:
        last: Dict[str, Dict[str, Any]] = {}
        for record in ScoreFile(score_dir / f"{reader}.jsonl").records():
            if record["item"] not in key["items"]:
                raise InputError(f"Reader {reader} scored item {record['item']!r}, which the key lacks.")
            last[record["item"]] = record
        completeness[reader] = {"scored": len(last), "total": len(study.order(reader))}
        for item_id, record in sorted(last.items()):
            entry = key["items"][item_id]
            readings.append(Reading(
                reader=reader, item=item_id, case=entry["case"], methods=(entry["A"], entry["B"]),
                scores=(record["scores"]["A"], record["scores"]["B"]), preference=record["preference"],
                comment=record.get("comment", ""),
            ))
    return readings, completeness


# ---------------------------------------------------------------- statistics


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Dict[str, Any]:
    """n, mean, SD and the t interval of the mean (degenerate when every value is the same)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None}
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else None
    if n < 2:
        low = high = None
    elif sd == 0.0:
        low = high = mean
    else:
        low, high = (float(v) for v in stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(x)))
    return {"n": n, "mean": mean, "sd": sd, "ci_low": low, "ci_high": high}


def paired_test(method: Sequence[float], reference: Sequence[float]) -> Dict[str, Any]:
    """Wilcoxon signed-rank test of method − reference with the matched-pairs rank-biserial correlation."""
    from scipy import stats

    difference = np.asarray(method, dtype=float) - np.asarray(reference, dtype=float)
    nonzero = difference[difference != 0]
    result: Dict[str, Any] = {
        "n_pairs": int(difference.size),
        "n_nonzero": int(nonzero.size),
        "mean_difference": float(difference.mean()) if difference.size else None,
        "median_difference": float(np.median(difference)) if difference.size else None,
        "statistic": None,
        "p_value": None,
        "rank_biserial": None,
    }
    if difference.size == 0:
        return result
    if nonzero.size == 0:
        result.update(p_value=1.0, rank_biserial=0.0, note="every pair scored the same")
        return result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # small samples: scipy notes the normal approximation
        test = stats.wilcoxon(difference, zero_method="wilcox", alternative="two-sided")
    ranks = stats.rankdata(np.abs(nonzero))
    positive, negative = float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())
    result.update(statistic=float(test.statistic), p_value=float(test.pvalue),
                  rank_biserial=(positive - negative) / (positive + negative))
    return result


def agreement(ratings: Dict[str, Dict[str, int]], level: str = "ordinal") -> Dict[str, Any]:
    """Agreement of readers on shared units: ``ratings[reader][unit] = score``.

    Quadratic-weighted Cohen's κ when there are exactly two readers (ordinal scores) or
    plain κ (nominal), Krippendorff's α for two or more.  None where undefined (for
    example when every rating is the same value).
    """
    readers = sorted(ratings)
    units = sorted({unit for scores in ratings.values() for unit in scores})
    shared = [u for u in units if sum(u in ratings[r] for r in readers) >= 2]
    result: Dict[str, Any] = {"readers": len(readers), "units": len(shared), "cohen_kappa": None,
                              "krippendorff_alpha": None}
    if len(readers) < 2 or not shared:
        result["note"] = "needs at least two readers who scored the same images"
        return result
    values: List[Any]  # scores 1-5 (ordinal) or preferences "A"/"B"/"equal" (nominal)
    encode: Dict[Any, int]
    if level == "ordinal":
        values = list(p.SCALE)
        encode = {v: v for v in values}
    else:
        values = list(p.PREFERENCES)
        encode = {v: i for i, v in enumerate(values)}
    if len(readers) == 2:
        from sklearn.metrics import cohen_kappa_score

        both = [u for u in shared if all(u in ratings[r] for r in readers)]
        a = [ratings[readers[0]][u] for u in both]
        b = [ratings[readers[1]][u] for u in both]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            kappa = cohen_kappa_score(a, b, labels=values, weights="quadratic" if level == "ordinal" else None)
        result["cohen_kappa"] = float(kappa) if math.isfinite(kappa) else None
        result["kappa_weights"] = "quadratic" if level == "ordinal" else "none"
    import krippendorff

    matrix = np.array([[encode[ratings[r][u]] if u in ratings[r] else np.nan for u in shared] for r in readers],
                      dtype=float)
    domain = [encode[v] for v in values]
    distinct = np.unique(matrix[np.isfinite(matrix)])
    if distinct.size >= 2:
        alpha = krippendorff.alpha(reliability_data=matrix, value_domain=domain, level_of_measurement=level)
        result["krippendorff_alpha"] = float(alpha) if math.isfinite(alpha) else None
    else:
        result["note"] = "every rating is the same value, so agreement beyond chance is undefined"
    result["alpha_level"] = level
    return result


# ---------------------------------------------------------------- the summary


def _paired_scores(group: List[Reading], method: str, criterion: str) -> Tuple[List[int], List[int]]:
    """(method's scores, original's scores) of ``criterion`` in pairs of ``method`` with the original."""
    ours = [r.scores[r.methods.index(method)][criterion] for r in group]
    original = [r.scores[r.methods.index(p.REFERENCE_METHOD)][criterion] for r in group]
    return ours, original


def summarize_readings(readings: List[Reading], methods: Sequence[str]) -> Dict[str, Any]:
    """All statistics of the unblinded readings, as a JSON-ready dict."""
    from scipy import stats

    reference = p.REFERENCE_METHOD
    per_method: Dict[str, Dict[str, Any]] = {}
    for method in methods:
        per_method[method] = {}
        for criterion in p.CRITERION_KEYS:
            values = [r.scores[side][criterion] for r in readings for side in (0, 1) if r.methods[side] == method]
            entry = mean_ci(values)
            entry["counts"] = {str(s): int(sum(v == s for v in values)) for s in p.SCALE}
            per_method[method][criterion] = entry

    readers = sorted({r.reader for r in readings})
    versus: Dict[str, Dict[str, Any]] = {}
    for method in methods:
        if method == reference:
            continue
        pairs = [r for r in readings if set(r.methods) == {method, reference}]
        versus[method] = {}
        for criterion in p.CRITERION_KEYS:
            entry = paired_test(*_paired_scores(pairs, method, criterion))
            entry["per_reader"] = {
                reader: paired_test(*_paired_scores([r for r in pairs if r.reader == reader], method, criterion))
                for reader in readers
            }
            versus[method][criterion] = entry

    preferences = []
    for pair in sorted({tuple(sorted(r.methods)) for r in readings}):
        group = [r for r in readings if tuple(sorted(r.methods)) == pair]
        wins = {m: sum(r.preferred_method() == m for r in group) for m in pair}
        equal = sum(r.preference == "equal" for r in group)
        decided = sum(wins.values())
        p_value = float(stats.binomtest(wins[pair[0]], decided, 0.5).pvalue) if decided else None
        preferences.append({"methods": list(pair), "wins": wins, "equal": equal, "n": len(group),
                            "binomial_p": p_value})

    agreements = {}
    for criterion in p.CRITERION_KEYS:
        ratings: Dict[str, Dict[str, int]] = {}
        for r in readings:
            for side, label in enumerate(p.SIDES):
                ratings.setdefault(r.reader, {})[f"{r.item}/{label}"] = r.scores[side][criterion]
        agreements[criterion] = agreement(ratings, "ordinal")
    preference_ratings: Dict[str, Dict[str, Any]] = {}
    for r in readings:
        preference_ratings.setdefault(r.reader, {})[r.item] = r.preference
    agreements["preference"] = agreement(preference_ratings, "nominal")

    return {
        "readings": len(readings),
        "readers": readers,
        "cases": sorted({r.case for r in readings}),
        "methods": list(methods),
        "scores": per_method,
        "versus_original": versus,
        "preferences": preferences,
        "agreement": agreements,
        "comments": [{"reader": r.reader, "case": r.case, "methods": list(r.methods), "comment": r.comment}
                     for r in readings if r.comment.strip()],
    }


@dataclass
class SummaryResult:
    report: Path
    json: Path
    figure: Path
    summary: Dict[str, Any]


def _outputs(out: Path) -> Tuple[Path, Path, Path]:
    if out.suffix.lower() == ".md":
        return out, out.with_suffix(".json"), out.with_suffix(".png")
    return out / "summary.md", out / "summary.json", out / "summary.png"


def summarize_study(folder: Union[str, os.PathLike], out: Union[str, os.PathLike],
                    overwrite: bool = False) -> SummaryResult:
    """Unblind ``folder`` and write the markdown report, the JSON and the figure (``out`` = REPORT.md or a folder)."""
    folder, out = Path(folder), Path(out)
    report_path, json_path, figure_path = _outputs(out)
    parent = report_path.parent
    if out.suffix.lower() == ".md":
        if not (parent if str(parent) else Path(".")).is_dir():
            raise InputError(f"Output folder {parent} does not exist; create it first.")
    elif out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder or a REPORT.md path.")
    existing = [path for path in (report_path, json_path, figure_path) if path.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} already exists; pass --overwrite to replace the report.")
    key = load_key(folder)
    readings, completeness = load_readings(folder, key)
    if not readings:
        raise InputError(f"No scores in {folder / p.SCORES_DIR} yet; read the study first.")
    methods = list(key["methods"])
    summary = summarize_readings(readings, methods)
    summary["completeness"] = completeness
    summary["study"] = str(folder)
    summary["seed"] = key.get("seed")
    summary["method_details"] = _method_details(key)

    if out.suffix.lower() != ".md":
        out.mkdir(exist_ok=True)
    summary_figure(summary, figure_path)
    outputs.write_bytes(json_path, (json.dumps(outputs.json_ready(summary), indent=1, allow_nan=False) + "\n").encode("utf-8"))
    outputs.write_bytes(report_path, markdown_report(summary, figure_path.name).encode("utf-8"))
    return SummaryResult(report=report_path, json=json_path, figure=figure_path, summary=summary)


def _method_details(key: Dict[str, Any]) -> Dict[str, Any]:
    details = {}
    for image in key["images"].values():
        method = image["method"]
        if method not in details:
            details[method] = {k: v for k, v in image.items() if k not in ("case", "sha256", "method")}
    return details


# ---------------------------------------------------------------- outputs






def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _fmt_p(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def summary_figure(summary: Dict[str, Any], out_png: Path) -> Path:
    """Per-criterion score distributions by method (stacked 1–5 shares, mean ± 95 % CI) and preferences."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    methods = summary["methods"]
    colours = colormaps["RdYlGn"](np.linspace(0.08, 0.92, len(p.SCALE)))
    fig, axes = plt.subplots(2, 3, figsize=(13.5, 2.2 + 1.1 * len(methods)), constrained_layout=True)
    for axis, (criterion, label, _) in zip(axes.flat, p.CRITERIA):
        for row, method in enumerate(methods):
            entry = summary["scores"][method][criterion]
            total = max(entry["n"], 1)
            left = 0.0
            for score, colour in zip(p.SCALE, colours):
                share = entry["counts"][str(score)] / total
                axis.barh(row, share, left=left, color=colour, edgecolor="white", height=0.7)
                if share >= 0.08:
                    axis.text(left + share / 2, row, str(score), ha="center", va="center", fontsize=7)
                left += share
            if entry["mean"] is not None:
                ci = "" if entry["ci_low"] is None else f" [{entry['ci_low']:.1f}, {entry['ci_high']:.1f}]"
                axis.text(1.02, row, f"{entry['mean']:.2f}{ci}", va="center", fontsize=8)
        axis.set_yticks(range(len(methods)), methods, fontsize=8)
        axis.invert_yaxis()
        axis.set_xlim(0, 1)
        axis.set_xticks([0, 0.5, 1], ["0", "50%", "100%"], fontsize=7)
        axis.set_title(f"{label}\n(share of scores 1–5; mean [95% CI])", fontsize=9)
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)
    axis = axes.flat[len(p.CRITERIA)]
    rows = [entry for entry in summary["preferences"]]
    for row, entry in enumerate(rows):
        first, second = entry["methods"]
        if second == p.REFERENCE_METHOD:
            first, second = second, first
        total = max(entry["n"], 1)
        parts = [(entry["wins"][second], "#1a9850"), (entry["equal"], "#bdbdbd"), (entry["wins"][first], "#d73027")]
        left = 0.0
        for count, colour in parts:
            share = count / total
            axis.barh(row, share, left=left, color=colour, edgecolor="white", height=0.7)
            if count:
                axis.text(left + share / 2, row, str(count), ha="center", va="center", fontsize=7)
            left += share
        axis.text(1.02, row, f"p {_fmt_p(entry['binomial_p'])}", va="center", fontsize=8)
    axis.set_yticks(range(len(rows)), [f"{e['methods'][1] if e['methods'][0] == p.REFERENCE_METHOD else e['methods'][0]}"
                                       f" vs {p.REFERENCE_METHOD if p.REFERENCE_METHOD in e['methods'] else e['methods'][1]}"
                                       for e in rows], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xticks([0, 0.5, 1], ["0", "50%", "100%"], fontsize=7)
    axis.set_title("Preference (green: first preferred,\ngrey: equal, red: second preferred)", fontsize=9)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    readers = len(summary["readers"])
    fig.suptitle(f"Reader study: {summary['readings']} pair readings, {readers} reader{'s' * (readers != 1)}, "
                 f"{len(summary['cases'])} case{'s' * (len(summary['cases']) != 1)}", fontsize=11)

    try:
        with outputs.atomic_file(out_png) as handle:
            fig.savefig(handle.path, dpi=110)
    finally:
        plt.close(fig)
    return out_png


def markdown_report(summary: Dict[str, Any], figure_name: str) -> str:
    """The human-readable report: completeness, scores, tests against the original, preferences, agreement."""
    labels = {key: label for key, label, _ in p.CRITERIA}
    lines = ["# Reader study summary", "",
             f"Study: `{summary['study']}` (seed {summary.get('seed')}); unblinded with its key after checking the "
             "SHA-256 of every image and of the worklist.", "",
             f"![Score distributions by method]({figure_name})", "", "## Readings", "",
             "| reader | pairs scored | of |", "|---|---:|---:|"]
    for reader, entry in summary["completeness"].items():
        lines.append(f"| {reader} | {entry['scored']} | {entry['total']} |")
    incomplete = [r for r, e in summary["completeness"].items() if e["scored"] < e["total"]]
    if incomplete:
        lines += ["", f"**Incomplete:** {', '.join(incomplete)} have not scored every pair; the numbers below use "
                  "the pairs scored so far."]
    lines += ["", "Methods: " + "; ".join(f"`{m}`" + (f" ({', '.join(f'{k} {v}' for k, v in d.items())})" if d else "")
                                         for m, d in summary["method_details"].items()), ""]
    lines += ["## Scores (1–5, higher is better): mean [95% t interval], n readings", "",
              "| method | " + " | ".join(labels[c] for c in p.CRITERION_KEYS) + " |",
              "|---|" + "---:|" * len(p.CRITERION_KEYS)]
    for method in summary["methods"]:
        cells = []
        for criterion in p.CRITERION_KEYS:
            e = summary["scores"][method][criterion]
            cells.append(f"{_fmt(e['mean'])} [{_fmt(e['ci_low'], 1)}, {_fmt(e['ci_high'], 1)}], n {e['n']}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "## Against the original (same pair): Wilcoxon signed-rank, all readers pooled", "",
              "Difference = method − original; r = matched-pairs rank-biserial correlation (+1: every non-zero "
              "difference favours the method). Zero differences are dropped.", "",
              "| method | criterion | pairs | mean diff | median diff | W | p | r | p per reader |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for method, criteria in summary["versus_original"].items():
        for criterion, e in criteria.items():
            per_reader = ", ".join(f"{r} {_fmt_p(v['p_value'])}" for r, v in e["per_reader"].items())
            lines.append(f"| {method} | {labels[criterion]} | {e['n_pairs']} | {_fmt(e['mean_difference'])} | "
                         f"{_fmt(e['median_difference'], 1)} | {_fmt(e['statistic'], 1)} | {_fmt_p(e['p_value'])} | "
                         f"{_fmt(e['rank_biserial'])} | {per_reader} |")
    lines += ["", "## Preference", "", "| pair | first preferred | equal | second preferred | binomial p (ties out) |",
              "|---|---:|---:|---:|---:|"]
    for e in summary["preferences"]:
        a, b = e["methods"]
        lines.append(f"| {a} vs {b} | {e['wins'][a]} | {e['equal']} | {e['wins'][b]} | {_fmt_p(e['binomial_p'])} |")
    lines += ["", "## Inter-reader agreement", "",
              "Cohen's κ (quadratic weights; two readers only) and Krippendorff's α (ordinal; preference: nominal) "
              "on the images every reader pair scored.", "", "| criterion | images | Cohen's κ | Krippendorff's α | note |",
              "|---|---:|---:|---:|---|"]
    for criterion, e in summary["agreement"].items():
        name = labels.get(criterion, criterion)
        lines.append(f"| {name} | {e['units']} | {_fmt(e['cohen_kappa'])} | {_fmt(e['krippendorff_alpha'])} | "
                     f"{e.get('note', '')} |")
    if summary["comments"]:
        lines += ["", "## Comments", ""]
        lines += [f"- {c['reader']}, {c['case']} ({' vs '.join(c['methods'])}): {c['comment']}"
                  for c in summary["comments"]]
    lines += ["", "Readings of the same pair by different readers are treated as independent in the pooled tests; "
              "with few cases, read the per-reader p-values and the confidence intervals rather than the pooled "
              "p alone.", ""]
    return "\n".join(lines)
