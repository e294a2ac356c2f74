"""docs/img/heatvit_accuracy_vs_macs.png: the bundled digits ViT's accuracy against its MACs
per image for each keep-ratio variant (no selectors, keep80, keep60, keep50), measured by the
fixed-point engine model (chipforge.heatvit.run_heatvit) on the 360 digits test images.

Run: ``.venv/bin/python tools/plot_heatvit_keep.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from chipforge.heatvit import run_heatvit  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "heatvit_accuracy_vs_macs.png"


def main() -> None:
    points = []
    for selectors in (None, "keep80", "keep60", "keep50"):
        r = run_heatvit("vit-digits", selectors=selectors)
        points.append((selectors or "no selectors", r["macs_per_image"] / 1e6,
                       100 * r["accuracy"]))
        print(f"{points[-1][0]:<13} {points[-1][1]:.3f} M MACs/image  {points[-1][2]:.2f} %")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([p[1] for p in points], [p[2] for p in points], "o-")
    for name, macs, acc in points:
        ax.annotate(name, (macs, acc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("MACs per image (millions, measured per image)")
    ax.set_ylabel("accuracy (%), 8-bit engine")
    ax.set_title("HeatViT token selectors, digits ViT (360 test images)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT, dpi=120)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
