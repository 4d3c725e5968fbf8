"""Find what a run directory holds and render each part as a report section.

Recognised (anywhere below the run directory): audits (``audit.json``), attribution scores
(``scores.json``: query x train matrices and per-example scores), training-dynamics recordings
(``dynamics.json``), pruning studies (``runs.csv``), selections (``selection.json``) and
mislabel-detection reports (JSON with ``auc`` and ``average_precision``). Every value that comes
from data is escaped by :func:`infscope.html.table` or :func:`html.escape`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infscope.errors import InputError
from infscope.html import table
from infscope.plotting import saved_figure
from infscope.report.page import Section, filterable

SORTABLE = 'class="sortable"'


class Lookup:
    """Text and label of each example id, from data files (jsonl/json/csv/parquet)."""

    def __init__(
        self, paths: Sequence[str | Path] = (), text_field: str = "text", label_field: str = "label"
    ) -> None:
        from infscope.data import ExampleSet

        self.rows: dict[str, tuple[str, str]] = {}
        for path in paths:
            data = ExampleSet.from_file(path)
            for id_, record in zip(data.ids, data.examples):
                text = record.get(text_field, "") if isinstance(record, dict) else ""
                label = record.get(label_field, "") if isinstance(record, dict) else ""
                self.rows[id_] = (
                    "" if text is None else str(text),
                    "" if label is None else str(label),
                )

    def text(self, id_: str) -> str:
        return self.rows.get(id_, ("", ""))[0]

    def label(self, id_: str) -> str:
        return self.rows.get(id_, ("", ""))[1]


def figure(draw: Callable[[Any], None], figsize: tuple[float, float] = (6.4, 4.0)) -> str:
    """An ``<img>`` with the figure ``draw(axis)`` makes, inline as a PNG data URI."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "figure.png"
        with saved_figure(path, figsize) as axis:
            draw(axis)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="figure" src="data:image/png;base64,{data}"></p>'


def _anchor(kind: str, path: Path) -> str:
    """A stable HTML id for a section from its path."""
    return f"{kind}-{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


# -- audits ---------------------------------------------------------------------------------------
def audit_section(directory: Path, lookup: Lookup, max_rows: int) -> Section:
    from infscope.audit import AuditResult

    result = AuditResult.load(directory)
    position = {i: p for p, i in enumerate(result.ids)}
    texts = result.texts

    def text_of(id_: str) -> str:
        return texts[position[id_]] if texts is not None else lookup.text(id_)

    def neighbours(ids: list[str]) -> str:
        return " | ".join(f"{i}: {_short(text_of(i), 80)}" for i in ids)

    records = result.records(max_rows)
    evidence = list(result.evidence)
    columns = ["rank", "id", "given", "suggested", "suspicion", "support", "flagged", "text"]
    columns += evidence + [
        "supporting (carry the suggested label)",
        "contradicting (carry the given label)",
        "duplicates",
    ]
    rows = [
        [
            r["rank"],
            r["id"],
            r["given"],
            r["suggested"],
            r["suspicion"],
            r["support"],
            "yes" if r["flagged"] else "",
            _short(text_of(r["id"]), 300),
            *(_finite(r[name]) for name in evidence),
            neighbours(r["supporting"]),
            neighbours(r["contradicting"]),
            r["duplicates"],
        ]
        for r in records
    ]
    anchor = _anchor("audit", directory)
    suspects = table(columns, rows, attributes=f'{SORTABLE} id="{anchor}-suspects"')
    flagged = result.flagged

    def histogram(axis: Any) -> None:
        bins = np.linspace(0, 1, 41)
        axis.hist(result.suspicion[~flagged], bins, alpha=0.7, label="not flagged")
        axis.hist(result.suspicion[flagged], bins, alpha=0.7, label="flagged")
        axis.set_xlabel("suspicion")
        axis.set_ylabel("examples")
        axis.set_yscale("log")
        axis.legend()

    groups = [
        [
            g_index,
            group.kind,
            "yes" if group.conflicting else "",
            len(group.members),
            " | ".join(
                f"{result.ids[m]} ({result.label_name(int(result.labels[m]))}): "
                f"{_short(text_of(result.ids[m]), 80)}"
                for m in group.members[:10]
            ),
        ]
        for g_index, group in enumerate(result.duplicates[:max_rows])
    ]
    shown = f"the {len(records)} most suspicious of {len(result)}"
    cautions = "".join(
        f'<p class="warning"><b>warning:</b> {html.escape(w)}</p>' for w in result.warnings
    )
    ranking = result.describe_ranking()
    body = (
        cautions
        + f"<p>{html.escape(result.summary())}. Suspicion: 1 = surely mislabeled; suggested = the "
        f"most probable other label, support = its probability; neighbours are the most similar "
        f"other training examples.</p>"
        + (f"<p>Ranking: {html.escape(ranking)}.</p>" if ranking else "")
        + figure(histogram, (6.4, 3.2))
        + f"<h3>Suspects ({html.escape(shown)})</h3>"
        + filterable(f"{anchor}-suspects", suspects, len(rows))
        + f"<h3>Duplicate groups ({len(result.duplicates)}; conflicting labels first)</h3>"
        + filterable(
            f"{anchor}-duplicates",
            table(
                ["group", "kind", "conflicting", "size", "members: id (label): text"],
                groups,
                attributes=f'{SORTABLE} id="{anchor}-duplicates"',
            ),
            len(groups),
        )
    )
    return Section("Audit: likely mislabeled examples", str(directory), result.info, body, anchor)


# -- attribution scores ---------------------------------------------------------------------------
def scores_section(
    directory: Path, lookup: Lookup, top: int, max_queries: int, max_rows: int
) -> Section:
    from infscope.attribution import SelfInfluence, load_scores

    scores = load_scores(directory)
    anchor = _anchor("scores", directory)
    settings = {"method": scores.method, **scores.metadata}
    if isinstance(scores, SelfInfluence):
        rows = [
            [
                r["rank"],
                r["train_id"],
                r["score"],
                lookup.label(r["train_id"]),
                _short(lookup.text(r["train_id"]), 300),
            ]
            for r in scores.top_rows(min(max_rows, len(scores.train_ids)))
        ]

        def histogram(axis: Any) -> None:
            axis.hist(scores.values, 50)
            axis.set_xlabel(scores.method)
            axis.set_ylabel("examples")
            axis.set_yscale("log")

        means = scores.metadata.get("high_means", "high = unusual / memorised")
        body = (
            f"<p>{len(scores.train_ids)} per-example scores ({html.escape(str(means))}); ranked "
            f"most suspicious first.</p>"
            + figure(histogram, (6.4, 3.2))
            + filterable(
                f"{anchor}-table",
                table(
                    ["rank", "id", "score", "label", "text"],
                    rows,
                    attributes=f'{SORTABLE} id="{anchor}-table"',
                ),
                len(rows),
            )
        )
        return Section(
            f"Per-example scores: {scores.method}", str(directory), settings, body, anchor
        )
    n_query = min(max_queries, len(scores.query_ids))
    by_query: dict[str, list[dict]] = {}
    for row in scores.top_rows(top, max_queries=n_query):
        by_query.setdefault(row["query_id"], []).append(row)
    blocks = []
    for query_id, rows in by_query.items():
        cells = [
            [
                r["direction"],
                r["rank"],
                r["train_id"],
                r["score"],
                lookup.label(r["train_id"]),
                _short(lookup.text(r["train_id"]), 300),
            ]
            for r in rows
        ]
        label = lookup.label(query_id)
        blocks.append(
            f'<div class="query"><h3>query {html.escape(query_id)}'
            f"{' — label ' + html.escape(label) if label else ''}</h3>"
            f"<p>{html.escape(_short(lookup.text(query_id), 500))}</p>"
            + table(
                ["direction", "rank", "train id", "score", "label", "text"],
                cells,
                attributes=SORTABLE,
            )
            + "</div>"
        )
    body = (
        f"<p>{len(scores.query_ids)} queries x {len(scores.train_ids)} training examples. "
        f"For each of the first {n_query} queries, the {top} training examples that help it most "
        f"(positive: they lower the query's loss) and hurt it most.</p>" + "".join(blocks)
    )
    return Section(f"Attribution: {scores.method}", str(directory), settings, body, anchor)


# -- training dynamics ----------------------------------------------------------------------------
def dynamics_section(directory: Path, lookup: Lookup, max_rows: int) -> Section:
    from infscope.dynamics import DynamicsRecorder, data_map

    recorder = DynamicsRecorder.load(directory)
    coordinates = data_map(recorder)
    confidence = coordinates["confidence"].values
    variability = coordinates["variability"].values
    correctness = coordinates["correctness"].values
    ids = coordinates["confidence"].train_ids

    def scatter(axis: Any) -> None:
        points = axis.scatter(
            variability, confidence, c=correctness, s=6, cmap="viridis", vmin=0, vmax=1
        )
        axis.figure.colorbar(points, ax=axis, label="correctness")
        axis.set_xlabel("variability")
        axis.set_ylabel("confidence")

    order = np.argsort(confidence, kind="stable")[:max_rows]
    rows = [
        [
            ids[i],
            _finite(confidence[i]),
            _finite(variability[i]),
            _finite(correctness[i]),
            lookup.label(ids[i]),
            _short(lookup.text(ids[i]), 300),
        ]
        for i in order.tolist()
    ]
    anchor = _anchor("dynamics", directory)
    body = (
        f"<p>Data map of {len(ids)} examples over {len(recorder.epochs)} recorded epochs: "
        "hard to learn (low confidence), ambiguous (high variability), easy (high confidence, low "
        "variability). Mislabeled examples sit at low confidence and low variability.</p>"
        + figure(scatter, (6.4, 4.4))
        + "<h3>Lowest confidence first</h3>"
        + filterable(
            f"{anchor}-table",
            table(
                ["id", "confidence", "variability", "correctness", "label", "text"],
                rows,
                attributes=f'{SORTABLE} id="{anchor}-table"',
            ),
            len(rows),
        )
    )
    settings = {"epochs": [str(e) for e in recorder.epochs], **recorder.metadata}
    return Section("Training dynamics: data map", str(directory), settings, body, anchor)


# -- pruning studies, selections, mislabel reports ------------------------------------------------
def pruning_section(directory: Path) -> Section:
    from infscope.evaluation.pruning import PruningResult

    result = PruningResult.from_csv(directory / "runs.csv")
    rows = [
        [r["score"], r["strategy"], r["keep_fraction"], r["mean"], r["std"], r["n_seeds"]]
        for r in result.summary()
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = result.plot(Path(folder) / "curve.png")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    body = f'<p><img alt="pruning curves" src="data:image/png;base64,{data}"></p>' + table(
        ["score", "strategy", "keep fraction", "mean", "std", "seeds"], rows, attributes=SORTABLE
    )
    summary = directory / "summary.txt"
    if summary.is_file():
        body += f"<pre>{html.escape(summary.read_text(encoding='utf-8'))}</pre>"
    anchor = _anchor("pruning", directory)
    settings = {"runs": len(result.runs), "settings": "not recorded by runs.csv"}
    return Section("Pruning study", str(directory), settings, body, anchor)


def selection_section(directory: Path, lookup: Lookup, max_rows: int) -> Section:
    from infscope.selection import Selection

    selection = Selection.load(directory)
    rows = [
        [rank + 1, id_, float(w), reason, lookup.label(id_), _short(lookup.text(id_), 300)]
        for rank, (id_, w, reason) in enumerate(
            zip(
                selection.ids[:max_rows], selection.weights[:max_rows], selection.reasons[:max_rows]
            )
        )
    ]
    anchor = _anchor("selection", directory)
    summary = directory / "summary.txt"
    body = (
        f"<p>{len(selection)} picks by {html.escape(selection.method)}.</p>"
        + (
            f"<pre>{html.escape(summary.read_text(encoding='utf-8'))}</pre>"
            if summary.is_file()
            else ""
        )
        + filterable(
            f"{anchor}-table",
            table(
                ["pick", "id", "weight", "reason", "label", "text"],
                rows,
                attributes=f'{SORTABLE} id="{anchor}-table"',
            ),
            len(rows),
        )
    )
    return Section(
        f"Selection: {selection.method}",
        str(directory),
        {"method": selection.method, **selection.info},
        body,
        anchor,
    )


def mislabel_section(path: Path, report: dict[str, Any]) -> Section:
    found = report.get("found_at", {})
    rows = [["ROC AUC", report["auc"]], ["average precision", report["average_precision"]]]
    rows += [[f"found in the top {float(f):.0%}", v] for f, v in found.items()]
    body = table(["metric", "value"], rows)
    anchor = _anchor("mislabel", path)
    settings = {
        k: v for k, v in report.items() if k not in ("auc", "average_precision", "found_at")
    }
    return Section(
        f"Mislabel detection: {report.get('method', '')}", str(path), settings, body, anchor
    )


# -- discovery ------------------------------------------------------------------------------------
def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def discover(
    run_dir: Path, lookup: Lookup, top: int = 5, max_queries: int = 50, max_rows: int = 2000
) -> Iterator[Section]:
    """Every recognised result below ``run_dir``, in sorted path order."""
    if not run_dir.is_dir():
        raise InputError(f"no such run directory: {run_dir}")
    for root, folders, files in os.walk(run_dir):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        here = Path(root)
        names = set(files)
        relative = here.relative_to(run_dir.parent)
        if "audit.json" in names:
            yield _relabel(audit_section(here, lookup, max_rows), relative)
        if "scores.json" in names:
            yield _relabel(scores_section(here, lookup, top, max_queries, max_rows), relative)
        if "dynamics.json" in names:
            yield _relabel(dynamics_section(here, lookup, max_rows), relative)
        if "runs.csv" in names:
            yield _relabel(pruning_section(here), relative)
        if "selection.json" in names:
            yield _relabel(selection_section(here, lookup, max_rows), relative)
        for name in sorted(n for n in names if n.endswith(".json")):
            report = _json(here / name)
            if isinstance(report, dict) and {"auc", "average_precision"} <= set(report):
                yield _relabel(mislabel_section(here / name, report), relative / name)


def _relabel(section: Section, relative: Path) -> Section:
    section.source = str(relative)
    return section
