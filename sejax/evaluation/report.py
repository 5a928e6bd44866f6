"""``sejax report``: one self-contained HTML page describing a training run.

Everything comes from files the run already wrote (``config.json``, ``split.json``,
``metrics.jsonl``, ``summary.json``, ``eval/<split>.json``, the checkpoint folder), so a
report can be made at any time, for any workdir, without TensorFlow or the data. Figures are
PNGs embedded as base64 ``data:`` URIs and the styles are inline: the file can be mailed or
archived alone. TensorBoard logs stay where they are; this is the summary to share.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sejax.errors import DataError
from sejax.io import read_json, write_atomic

SPLIT_ORDER = ("train", "validation", "test")
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1000px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;
padding:.25em .6em;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{
text-align:left}img{max-width:100%}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;
font-size:.85em}.muted{color:#777}
"""


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of ``metrics.jsonl``; for a step logged twice (a resumed run) the last row wins,
    merged key by key. Unparseable lines (a crash mid-write) are skipped."""
    by_step: dict[int, dict[str, float]] = {}
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            by_step.setdefault(int(row["step"]), {}).update(row)
    return [by_step[s] for s in sorted(by_step)]


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    return _img(buf.getvalue())


def _img(png: bytes, alt: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def learning_curves(rows: Sequence[dict[str, float]]) -> str | None:
    """Loss, accuracy/UAR and learning rate against the step, as an embedded PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    panels = [
        ("loss", ("train_loss", "val_loss")),
        ("accuracy / UAR", ("train_accuracy", "val_accuracy", "val_uar", "val_macro_f1")),
        ("learning rate", ("train_learning_rate",)),
    ]
    panels = [(t, [k for k in keys if series(k)[0]]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            x, y = series(key)
            ax.plot(x, y, marker="o" if key.startswith("val") else None, markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _confusion_png(report: dict[str, Any], name: str) -> str:
    from sejax.evaluation.metrics import plot_confusion_matrix  # matplotlib, on first use

    with tempfile.TemporaryDirectory() as tmp:
        path = plot_confusion_matrix(
            report["confusion_matrix"], report["label_names"], Path(tmp) / "cm.png",
            title=f"{name}: accuracy {report['accuracy']:.3f}, UAR {report['uar']:.3f}",
        )  # fmt: skip
        return _img(path.read_bytes(), f"{name} confusion matrix")


def _eval_reports(eval_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """Evaluation reports in ``eval/`` (standard splits first, then e.g. cross-corpus ones)."""
    found = []
    for path in sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []:
        report = read_json(path)
        if isinstance(report, dict) and {"confusion_matrix", "label_names", "per_class"} <= set(
            report
        ):
            found.append((path.stem, report))
    order = {name: i for i, name in enumerate(SPLIT_ORDER)}
    return sorted(found, key=lambda x: (order.get(x[0], len(order)), x[0]))


def _timing(summary: dict[str, Any] | None, rows: Sequence[dict[str, float]]) -> list[list[Any]]:
    out: list[list[Any]] = []
    if summary:
        for key in ("train_seconds", "steps", "epochs", "best_epoch", "stopped_early",
                    "num_devices", "parallel"):  # fmt: skip
            if key in summary:
                out.append([key, summary[key]])
    train = [r for r in rows if "train_loss" in r and "time" in r]
    if len(train) >= 2:
        steps = train[-1]["step"] - train[0]["step"]
        seconds = train[-1]["time"] - train[0]["time"]
        if seconds > 0:
            out.append(["steps per second (between train logs)", steps / seconds])
    epochs = [r for r in rows if "epoch" in r and "time" in r]
    if len(epochs) >= 2:
        per_epoch = np.diff([r["time"] for r in epochs]) / np.maximum(
            np.diff([r["epoch"] for r in epochs]), 1e-9
        )
        out.append(["seconds per epoch (median)", float(np.median(per_epoch))])
    if rows and "time" in rows[0] and "time" in rows[-1]:
        start = datetime.datetime.fromtimestamp(rows[0]["time"], datetime.UTC)
        end = datetime.datetime.fromtimestamp(rows[-1]["time"], datetime.UTC)
        out.append(["first / last log (UTC)", f"{start:%Y-%m-%d %H:%M:%S} / {end:%H:%M:%S}"])
    return out


def _checkpoints(workdir: Path) -> list[int]:
    folder = workdir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def build_html(workdir: str | Path) -> tuple[str, list[str]]:
    """The report page for ``workdir`` and the names of the sections it has data for."""
    from sejax import __version__

    workdir = Path(workdir).expanduser().absolute()
    if not workdir.is_dir():
        raise DataError(f"workdir not found: {workdir}")
    config = read_json(workdir / "config.json")
    split = read_json(workdir / "split.json")
    summary = read_json(workdir / "summary.json")
    rows = read_metrics(workdir / "metrics.jsonl")
    if config is None and not rows and not _checkpoints(workdir):
        raise DataError(
            f"{workdir} holds no training run (no config.json, metrics.jsonl or checkpoints/)"
        )
    sections: list[str] = []
    parts = [f"<h1>sejax run report</h1><p class=muted>{html.escape(str(workdir))}<br>"
             f"generated {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC} by sejax "
             f"{html.escape(__version__)}</p>"]  # fmt: skip
    leaking = (isinstance(split, dict) and split.get("leaking")) or any(
        r.get("leaking") for _, r in _eval_reports(workdir / "eval")
    )
    if leaking:  # data.allow_leakage: say so before any number
        parts.append("<p style='color:#b00;font-weight:bold'>LEAKING SPLIT: a speaker or an "
                     "identical recording is in training and in evaluation (see split.json), "
                     "so these scores overstate accuracy on unseen speakers.</p>")  # fmt: skip

    evals = _eval_reports(workdir / "eval")
    if evals:
        sections.append("results")
        rows_ = [[name, r.get("num_examples", ""), r["accuracy"], r["uar"], r["macro_f1"],
                  r["loss"] if r.get("loss") is not None else "", r.get("step", "")]
                 for name, r in evals]  # fmt: skip
        header = ["evaluation", "examples", "accuracy", "UAR", "macro-F1", "loss", "step"]
        parts.append("<h2>Results</h2>" + _table(header, rows_))

    curves = learning_curves(rows)
    parts.append("<h2>Learning curves</h2>")
    if curves:
        sections.append("learning_curves")
        parts.append(curves)
    else:
        parts.append("<p class=muted>no metrics.jsonl with train/validation scalars</p>")

    for name, report in evals:
        sections.append(f"eval:{name}")
        per_class = [[label, c["precision"], c["recall"], c["f1"], c["support"]]
                     for label, c in report["per_class"].items()]  # fmt: skip
        extra = ""
        if report.get("actors"):
            extra = f"<p>actors: {html.escape(', '.join(map(str, report['actors'])))}</p>"
        table = _table(["class", "precision", "recall", "F1", "support"], per_class)
        title = f"<h2>Evaluation: {html.escape(name)}</h2>{extra}"
        parts.append(title + _confusion_png(report, name) + table)
    if not evals:
        command = html.escape(f"sejax evaluate --workdir {workdir}")
        parts.append(
            f"<h2>Evaluation</h2><p class=muted>no eval/*.json: run <code>{command}</code></p>"
        )

    parts.append("<h2>Split</h2>")
    if isinstance(split, dict):
        sections.append("split")
        names = [n for n in SPLIT_ORDER if n in split] + [n for n in split if n not in SPLIT_ORDER]
        parts.append(_table(["split", "examples", "actors"], [
            [n, split[n].get("num_examples", ""), ", ".join(map(str, split[n].get("actors", [])))]
            for n in names if isinstance(split[n], dict) and "num_examples" in split[n]
        ]))  # fmt: skip
    else:
        parts.append("<p class=muted>no split.json</p>")

    timing = _timing(summary if isinstance(summary, dict) else None, rows)
    ckpts = _checkpoints(workdir)
    if ckpts:
        timing.append(["checkpoints kept (steps)", ", ".join(map(str, ckpts))])
    parts.append("<h2>Timing and run</h2>")
    if timing:
        sections.append("timing")
        parts.append(_table(["", "value"], timing))
    else:
        parts.append("<p class=muted>no summary.json or timed metrics</p>")

    parts.append("<h2>Config</h2>")
    if isinstance(config, dict):
        sections.append("config")
        data = config.get("data", {})
        parts.append(f"<p>data: {html.escape(str(data.get('path') or 'built-in demo corpus'))}"
                     f" ({html.escape(str(data.get('corpus', '')))})</p>")  # fmt: skip
        parts.append("<details open><summary>config.json</summary><pre>"
                     + html.escape(json.dumps(config, indent=2, sort_keys=True))
                     + "</pre></details>")  # fmt: skip
    else:
        parts.append("<p class=muted>no config.json</p>")

    page = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>sejax report: {html.escape(workdir.name)}</title><style>{STYLE}</style>"
            "</head><body>" + "\n".join(parts) + "</body></html>\n")  # fmt: skip
    return page, sections


def write_run_report(workdir: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Writes the report (default ``<workdir>/report.html``) atomically; returns a summary."""
    page, sections = build_html(workdir)
    path = Path(out) if out else Path(workdir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return {"report": str(path.absolute()), "sections": sections, "size_bytes": len(page)}
