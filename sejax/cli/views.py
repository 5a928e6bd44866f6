"""How the commands show their results: ``sejax predict``'s table and probabilities-over-time
plot, ``sejax cv``'s table of folds and its last JSON line.

Kept apart from the library (`sejax.inference.predict`, `sejax.evaluation.cv`) so its API
carries no presentation code and matplotlib is imported only when a plot is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sejax import io
from sejax.errors import SejaxError
from sejax.evaluation.records import METRICS  # a light module: `sejax --help` stays fast

if TYPE_CHECKING:  # predict imports JAX, which the tables do not need
    from sejax.inference.predict import Prediction

    Result = tuple[str, Prediction | SejaxError]

MAX_PLOTTED = 24  # files drawn in one PNG; more would make unreadable panels


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


# ------------------------------------------------------------------------------------------
# sejax predict


def format_predictions_table(
    results: Sequence[Result], label_names: Sequence[str], *, show_windows: bool = False
) -> str:
    """One row per file: duration, windows, top emotion, its probability, all probabilities.

    ``show_windows`` adds an indented row per window under files scored in several windows.
    Files that failed get one row with the error.
    """
    width = min(48, max([len("file"), *(len(name) for name, _ in results)]))
    cols = [name[:8] for name in label_names]
    header = (f"{'file':<{width}}  {'dur_s':>6} {'win':>4}  {'emotion':<10} {'prob':>5}  "
              + " ".join(f"{c:>8}" for c in cols))  # fmt: skip
    lines = [header, "-" * len(header)]
    for name, result in results:
        shown = _short(name, width)
        if isinstance(result, SejaxError):
            lines.append(f"{shown:<{width}}  error: {result}")
            continue
        probs = " ".join(f"{result.probabilities[k]:>8.3f}" for k in label_names)
        lines.append(
            f"{shown:<{width}}  {result.duration_s:>6.2f} {len(result.windows):>4}  "
            f"{result.label:<10} {result.confidence:>5.3f}  {probs}"
        )
        if show_windows and len(result.windows) > 1:
            for w in result.windows:
                span = f"  {w.start_s:7.2f}-{w.end_s:.2f}s"
                probs = " ".join(f"{w.probabilities[k]:>8.3f}" for k in label_names)
                lines.append(
                    f"{span:<{width}}  {'':>6} {'':>4}  {w.label:<10} "
                    f"{w.probabilities[w.label]:>5.3f}  {probs}"
                )
    return "\n".join(lines)


def plot_timeline(results: Sequence[Result], label_names: Sequence[str], path: Path) -> Path:
    """A PNG with one panel per file: each emotion's probability per window over time.

    Points sit at window centres, joined by lines; a clip scored in one window shows as one
    point per emotion. At most `MAX_PLOTTED` files are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(n, r) for n, r in results if not isinstance(r, SejaxError)][:MAX_PLOTTED]
    if not shown:
        raise SejaxError(f"nothing to plot in {path}: no file was scored")
    fig, axes = plt.subplots(
        len(shown), 1, figsize=(9, 2.4 * len(shown) + 0.8), squeeze=False, sharey=True
    )
    colors = plt.get_cmap("tab10")
    for ax, (name, pred) in zip(axes[:, 0], shown, strict=True):
        centres = [(w.start_s + w.end_s) / 2 for w in pred.windows]
        for i, label in enumerate(label_names):
            ax.plot(centres, [w.probabilities[label] for w in pred.windows], marker="o",
                    markersize=3, color=colors(i % 10), label=label)  # fmt: skip
        ax.set_xlim(0, max(pred.duration_s, 1e-3))
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.set_title(f"{_short(Path(name).name, 60)}: {pred.label} ({pred.confidence:.2f})",
                     fontsize=9)  # fmt: skip
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s), window centres")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 8), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------
# sejax cv


BLIND_NOTE = (
    "test metrics hidden (cv.blind): recorded in cv.json and the fold records; "
    "read them once, after the verdict, with `sejax compare A B --split test`"
)


def cv_summary(
    record: Mapping[str, Any], workdir: str | Path, blind: bool = False
) -> dict[str, Any]:
    """The short form of cv.json that ``sejax cv`` prints as its last line; ``blind``: its
    validation side only."""
    keep = ("fold", "test_actors", "accuracy", "uar", "macro_f1")
    pooled = record.get("pooled") or {}
    summary = {
        "command": "cv",
        "workdir": str(Path(workdir).absolute()),
        "protocol": record["protocol"],
        "leaking": record["leaking"],
        "transductive": record.get("transductive", False),
        "num_folds": record["num_folds"],
        "folds_done": record["folds_done"],
        "complete": record["complete"],
        "folds": [{k: r[k] for k in keep} for r in record["folds"]],
        "mean": record["mean"],
        "std": record["std"],
        "pooled": {k: pooled[k] for k in ("num_examples", *METRICS) if k in pooled} or None,
        "validation": record.get("validation"),
        "cv_json": str(Path(workdir).absolute() / "cv.json"),
    }
    if blind:  # the same summary less every test number
        summary = {k: v for k, v in summary.items() if k not in ("mean", "std", "pooled")}
        summary["folds"] = [{"fold": r["fold"], "validation": r.get("validation")}
                            for r in record["folds"]]  # fmt: skip
        summary["blind"] = True
    return summary


def _format_blind_table(record: Mapping[str, Any]) -> list[str]:
    """The folds' validation metrics and their mean ± std: what a blind run shows."""

    def row(name: str, actors: str, cells: Sequence[str]) -> str:
        return f"{name:<10}{actors:<22}" + "".join(f"{c:>14}" for c in cells)

    lines = [row("fold", "validation", [f"val {k}" for k in ("accuracy", "UAR", "macro-F1")])]
    for r in record["folds"]:
        val = r.get("validation")
        actors = " ".join(map(str, r.get("validation_actors") or [])) or "-"
        cells = [f"{val[k]:.3f}" if val else "-" for k in METRICS]
        lines.append(row(str(r["fold"]), actors, cells))
    if v := record.get("validation"):
        cells = [f"{v['mean'][k]:.3f}±{v['std'][k]:.3f}" for k in METRICS]
        lines.append(row("mean±std", "", cells))
    return [*lines, BLIND_NOTE]


def format_cv_table(record: Mapping[str, Any], blind: bool = False) -> str:
    """The folds' test metrics, mean ± std and pooled, with each fold's validation UAR (what
    recipes are chosen on) beside them, as a plain-text table; ``blind``: validation only."""

    def row(name: str, test: str, n: Any, cells: Sequence[str]) -> str:
        return f"{name:<10}{test:<22}{n!s:>9}" + "".join(f"{c:>14}" for c in cells)

    if blind:
        return "\n".join(_format_blind_table(record) + _flags(record))

    header = ("accuracy", "UAR", "macro-F1", "val UAR")
    lines = [row("fold", "test", "examples", header)]
    for r in record["folds"]:
        test = " ".join(map(str, r.get("test_parts") or r["test_actors"]))
        test = test if len(test) < 21 else test[:17] + " ..."
        val = r.get("validation")
        cells = [f"{r[k]:.3f}" for k in METRICS] + [f"{val['uar']:.3f}" if val else "-"]
        lines.append(row(str(r["fold"]), test, r["num_examples"], cells))
    if record["mean"]:
        m, s, p = record["mean"], record["std"], record["pooled"]
        v = record.get("validation")
        val_cell = f"{v['mean']['uar']:.3f}±{v['std']['uar']:.3f}" if v else "-"
        lines.append(row("mean±std", "", "",
                         [f"{m[k]:.3f}±{s[k]:.3f}" for k in METRICS] + [val_cell]))  # fmt: skip
        lines.append(row("pooled", "", p["num_examples"], [f"{p[k]:.3f}" for k in METRICS]))
    return "\n".join(lines + _flags(record))


def _flags(record: Mapping[str, Any]) -> list[str]:
    """The notes under a cv table: optimistic validation, leaking, transductive."""
    lines = []
    if record.get("validation_optimistic"):
        lines.append("val UAR: of the checkpoints the validation actors chose (optimistic; "
                     "choose recipes on runs whose test model is fixed in advance)")  # fmt: skip
    if record["leaking"]:
        lines.append("LEAKING: speakers or identical recordings are on both sides of the split")
    if record.get("transductive"):
        lines.append("TRANSDUCTIVE: each test speaker normalised with its own clips' statistics")
    return lines
