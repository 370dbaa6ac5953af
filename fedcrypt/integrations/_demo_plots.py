"""``fedcrypt demo``'s figure (rounds.png), apart from the run so the demo module stays small."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedcrypt.integrations.demo import DemoConfig, DemoOutcome

__all__ = ["plot_rounds"]


def plot_rounds(plt: Any, initial: float, outcome: "DemoOutcome", config: "DemoConfig") -> Any:
    """rounds.png: loss per round; seconds per round on a log axis (the protocol's time is often
    orders of magnitude below training's); with DP, the epsilon spent so far. Legends sit
    below the panels, off the data."""
    from matplotlib.ticker import MaxNLocator

    records = outcome.records
    rounds = [r.round for r in records]
    dp = any(not math.isnan(r.epsilon) for r in records)
    fig, axes = plt.subplots(1, 3 if dp else 2, figsize=(15 if dp else 10, 4.4))
    ax_loss, ax_cost = axes[0], axes[1]
    ax_loss.plot([0] + rounds, [initial] + [r.eval_loss for r in records], "o-", color="tab:blue", label="eval loss (global model, held-out blocks)")
    ax_loss.plot(rounds, [r.train_loss for r in records], "s--", color="tab:orange", label="train loss (clients' local steps)")
    ax_loss.set(xlabel="round", ylabel="cross-entropy loss (nats per token)", title="loss per round")
    width = 0.4
    ax_cost.bar(
        [x - width / 2 for x in rounds], [r.train_seconds for r in records], width, color="tab:blue", hatch="//", label="local training (all clients)"
    )
    ax_cost.bar(
        [x + width / 2 for x in rounds],
        [max(r.crypto_seconds, 1e-6) for r in records],
        width,
        color="tab:red",
        label=f"{config.protection} protocol (all clients + server)",
    )
    ax_cost.set_yscale("log")
    ax_cost.set(xlabel="round", ylabel="seconds (log scale)", title=f"time per round ({records[-1].bytes_up / 1024:,.0f} KiB up per client)")
    panels = [ax_loss, ax_cost]
    if dp:
        ax_eps = axes[2]
        ax_eps.plot(
            rounds, [r.epsilon for r in records], "D-", color="tab:green", label=f"epsilon spent (delta {config.dp_delta:g}, {config.dp_mode} DP)"
        )
        ax_eps.axhline(config.dp_epsilon, color="grey", linestyle=":", label=f"target epsilon {config.dp_epsilon:g}")
        ax_eps.set_ylim(bottom=0)
        ax_eps.set(xlabel="round", ylabel="epsilon (cumulative)", title="privacy spent")
        panels.append(ax_eps)
    for ax in panels:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
    fig.tight_layout()
    return fig
