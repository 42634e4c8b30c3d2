"""The report's figures and the loop's comparison plot, drawn with matplotlib's Agg canvas (no display, no
pyplot state). Each function takes the rows of one query (or a loop.json) and writes one PNG; it plots the
numbers it is given and computes none."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

Rows = Sequence[dict[str, Any]]
DPI = 100


def _figure(panels: int = 1, width: float = 8.0, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    return fig, list(axes)


def _save(fig, out_png: Path) -> Path:
    fig.savefig(out_png, format="png", metadata={"Software": None})
    return out_png


def _colours(runs: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {run: palette[i % len(palette)] for i, run in enumerate(runs)}


def _grouped_bars(ax, rows: Rows, category: str, value: str, runs: Sequence[str], label_values: bool = True) -> None:
    """One group of bars per category (in first-seen order), one bar per run."""
    categories = list(dict.fromkeys(r[category] for r in rows))
    colours = _colours(runs)
    width = 0.8 / max(len(runs), 1)
    for i, run in enumerate(runs):
        values = {r[category]: r[value] for r in rows if r["run_id"] == run}
        xs = [c + (i - (len(runs) - 1) / 2) * width for c in range(len(categories))]
        heights = [values.get(c, 0) or 0 for c in categories]
        bars = ax.bar(xs, heights, width * 0.95, label=run, color=colours[run])
        if label_values:
            ax.bar_label(bars, labels=[f"{h:.3g}" if c in values else "" for c, h in zip(categories, heights)],
                         fontsize=7, padding=1)
    ax.set_xticks(range(len(categories)), [str(c) for c in categories])


def _legend(fig, axes, runs: Sequence[str]) -> None:
    if len(runs) > 1:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(runs), 4), fontsize=8, frameon=False)


def goal_rates(rows: Rows, category: str, runs: Sequence[str], title: str, out_png: Path) -> Path:
    """Credited share of goals per `category` (domain or goal kind), one bar per run."""
    fig, (ax,) = _figure()
    _grouped_bars(ax, rows, category, "goal_rate", runs)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("goals credited / goals")
    ax.set_title(title, loc="left", fontsize=11)
    _legend(fig, [ax], runs)
    return _save(fig, out_png)


def branch_width(rows: Rows, runs: Sequence[str], out_png: Path) -> Path:
    """Mean tree width (nodes created) and live leaves per JOSH step, one colour per run."""
    fig, (ax,) = _figure()
    colours = _colours(runs)
    for run in runs:
        mine = [r for r in rows if r["run_id"] == run]
        steps = [r["step"] for r in mine]
        ax.plot(steps, [r["mean_width"] for r in mine], "-o", ms=3, color=colours[run], label=f"{run} width")
        ax.plot(steps, [r["mean_live"] for r in mine], "--s", ms=3, color=colours[run], alpha=0.7,
                label=f"{run} live leaves")
    ax.set_xlabel("JOSH step")
    ax.set_ylabel("branches per rollout (mean)")
    ax.set_title("Branch width (solid) and live leaves (dashed) per step", loc="left", fontsize=11)
    ax.legend(fontsize=7, frameon=False)
    return _save(fig, out_png)


def end_reasons(rows: Rows, runs: Sequence[str], out_png: Path) -> Path:
    """How rollouts ended (left) and how branches ended (right), counts per run."""
    fig, axes = _figure(2, width=9.0)
    for ax, scope, title in zip(axes, ("rollout", "branch"), ("Rollouts ended by", "Branches ended by")):
        mine = [r for r in rows if r["scope"] == scope]
        _grouped_bars(ax, mine, "end_reason", "n", runs)
        ax.set_title(title, loc="left", fontsize=11)
        ax.tick_params(axis="x", labelsize=8, rotation=20)
    axes[0].set_ylabel("count")
    _legend(fig, axes, runs)
    return _save(fig, out_png)


def tool_errors(rows: Rows, runs: Sequence[str], out_png: Path) -> Path:
    """Failed tool calls per error kind, one bar per run."""
    fig, (ax,) = _figure()
    _grouped_bars(ax, rows, "error_kind", "errors", runs)
    ax.set_ylabel("failed calls")
    ax.set_title("Tool errors by kind", loc="left", fontsize=11)
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    _legend(fig, [ax], runs)
    return _save(fig, out_png)


def collapse_depth(rows: Rows, runs: Sequence[str], out_png: Path) -> Path:
    """Collapses per depth (the turn at which the tree kept only a rewarded branch), one bar per run."""
    fig, (ax,) = _figure()
    _grouped_bars(ax, rows, "depth", "collapses", runs)
    ax.set_xlabel("depth of the rewarded node (agent turn)")
    ax.set_ylabel("collapses")
    ax.set_title("Collapse depth", loc="left", fontsize=11)
    _legend(fig, [ax], runs)
    return _save(fig, out_png)


def tokens(rows: Rows, runs: Sequence[str], out_png: Path) -> Path:
    """Prompt and generated tokens per rollout: one box (and its points) per run."""
    fig, axes = _figure(2, width=9.0)
    colours = _colours(runs)
    for ax, column, title in zip(axes, ("prompt_tokens", "completion_tokens"),
                                 ("Prompt tokens per rollout", "Generated tokens per rollout")):
        data = [[r[column] for r in rows if r["run_id"] == run] for run in runs]
        ax.boxplot(data, widths=0.5, showfliers=False)
        for i, (run, values) in enumerate(zip(runs, data), start=1):
            jitter = [i + ((k * 37) % 21 - 10) / 60 for k in range(len(values))]  # spread, deterministic
            ax.scatter(jitter, values, s=9, color=colours[run], alpha=0.7, zorder=3)
        ax.set_xticks(range(1, len(runs) + 1), runs, fontsize=7, rotation=10)
        ax.set_title(title, loc="left", fontsize=11)
    return _save(fig, out_png)


# -- the self-training loop -------------------------------------------------------------------------------

def loop_iterations(loop_json: dict[str, Any]) -> list[dict[str, Any]]:
    """The loop's iterations as [{label, scores, comparisons}]. Today's loop.json (factory/jobs/loop.py LoopResult)
    is one iteration with top-level `scores` and `comparisons`; a loop.json with `iterations` (a list of
    such dicts, each optionally with a `label`) gives one entry per iteration."""
    iterations = loop_json.get("iterations") or [loop_json]
    return [{"label": it.get("label") or f"iteration {i}", "scores": it.get("scores") or {},
             "comparisons": it.get("comparisons") or {}} for i, it in enumerate(iterations, start=1)]


def _chain(iterations: list[dict[str, Any]]) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[int, str, dict]]]:
    """The self-training chain M0, M1, ... (x = k) and each iteration's rivals of M_k+1 (x = k + 1): its control
    M_k' and any baseline (M_k^rft), as (x, name, score)."""
    import re

    chain: dict[str, dict[str, Any]] = {}
    rivals = []
    for k, it in enumerate(iterations):
        for name, score in it["scores"].items():
            if re.fullmatch(r"M\d+", name):
                chain.setdefault(name, score)
            else:
                rivals.append((k + 1, name, score))
    return list(chain.items()), rivals


def _interval(score: dict[str, Any]) -> list[list[float]] | None:
    if score.get("reward_low") is None:
        return None
    reward = score["average_reward"]
    return [[reward - score["reward_low"]], [score["reward_high"] - reward]]


def plot_loop(loop_json: dict[str, Any], out_png: Path) -> Path:
    """The self-training curve: Average Reward of M0, M1, ... with 95% bootstrap intervals (100% Success dashed), and
    each iteration's rivals of M_k+1 (its control M_k', the RFT baseline M_k^rft) beside it (left); each paired
    comparison's difference with its 95% paired-bootstrap interval (right). From a loop.json; writes `out_png`."""
    iterations = loop_iterations(loop_json)
    comparisons = [(it["label"], name, c) for it in iterations for name, c in it["comparisons"].items()]
    fig, (left, right) = _figure(2, width=11.0, height=max(3.8, 1.0 + 0.45 * len(comparisons)))
    chain, rivals = _chain(iterations)
    xs = [int(name[1:]) for name, _ in chain]
    rewards = [score.get("average_reward") or 0.0 for _, score in chain]
    left.plot(xs, rewards, "-", color="C3", lw=2, zorder=2)
    for x, reward, (name, score) in zip(xs, rewards, chain):
        left.errorbar(x, reward, yerr=_interval(score), fmt="o", color="C3", capsize=4, zorder=3,
                      label="JOSH: M_k" if x == xs[0] else None)
        left.annotate(f"{name} {reward:.4f}", (x, reward), xytext=(6, 4), textcoords="offset points", fontsize=8)
    success = [(x, score["success_rate"]) for x, (_, score) in zip(xs, chain) if score.get("success_rate") is not None]
    if success:
        left.plot(*zip(*success), "D--", color="C3", ms=4, lw=1, alpha=0.6, label="JOSH: 100% Success")
    kinds = {"'": ("control M_k' (unfiltered)", "C0", "s", -0.12),
             "^rft": ("RFT M_k^rft (equal tokens)", "C2", "^", 0.12)}
    seen = set()
    for x, name, score in rivals:
        label, colour, marker, shift = next((v for k, v in kinds.items() if k in name), (name, "C7", "v", 0.0))
        reward = score.get("average_reward") or 0.0
        left.errorbar(x + shift, reward, yerr=_interval(score), fmt=marker, color=colour, capsize=3,
                      label=None if label in seen else label)
        seen.add(label)
        left.annotate(f"{reward:.4f}", (x + shift, reward), xytext=(4, -10), textcoords="offset points", fontsize=7,
                      color=colour)
    left.set_xticks(xs, [f"M{x}" for x in xs])
    left.set_xlabel("self-training iteration")
    left.set_ylabel("Average Reward (95% bootstrap interval)")
    left.legend(fontsize=8, loc="best")
    tasks = {c.get("tasks") for _, _, c in comparisons} - {None}
    left.set_title("Average Reward per model" + (f" ({tasks.pop()} tasks)" if len(tasks) == 1 else ""),
                   loc="left", fontsize=11)
    for row, (label, name, c) in enumerate(reversed(comparisons)):
        right.errorbar(c["diff"], row, xerr=[[c["diff"] - c["low"]], [c["high"] - c["diff"]]], fmt="o",
                       color="C3" if c["low"] > 0 else "C0", capsize=4)
        right.annotate(f"{c['diff']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]  P(≤0)={c['p_not_better']:.3f}",
                       (c["low"], row), xytext=(0, 7), textcoords="offset points", ha="left", fontsize=8)
    right.axvline(0, color="grey", lw=1, ls="--")
    right.set_yticks(range(len(comparisons)), [name if len(iterations) == 1 else f"{name} ({label})"
                                                for label, name, _ in reversed(comparisons)], fontsize=9)
    right.set_ylim(-0.7, len(comparisons) - 0.3)
    right.grid(axis="x", alpha=0.3)
    right.set_xlabel("difference in Average Reward (paired bootstrap, 95%)")
    right.set_title("Paired comparisons", loc="left", fontsize=11)
    return _save(fig, out_png)
