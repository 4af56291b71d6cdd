"""Markdown for people: the run report (a Prefect artifact) and each version's model card.

The report must answer "how did this run do" inside the Prefect UI alone: its plots are embedded as
`data:` URIs and the model card is part of it, because a browser will not open files on the worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_pipeline.core.evaluation.plots import png_data_uri
from mnist_pipeline.core.registry.decisions import DecisionRecord
from mnist_pipeline.core.storage import store

PLOTS = (("Training curves", "training_curves.png"), ("Confusion matrix (test split)", "confusion_matrix.png"))
MODEL_CARD = "model_card.md"


def _interval(metrics: dict[str, Any]) -> str:
    low, high = metrics["accuracy_interval_95"]
    return f"{metrics['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}, {metrics['correct']}/{metrics['total']})"


def per_class_rows(metrics: dict[str, Any]) -> dict[str, list[Any]]:
    """The per-class results as columns in reading order, accuracies rounded (for tables people read)."""
    rows = metrics["per_class"]
    return {
        "class": [r["class"] for r in rows],
        "images": [r["count"] for r in rows],
        "correct": [r["correct"] for r in rows],
        "accuracy": [round(r["accuracy"], 4) for r in rows],
    }


def _per_class_table(metrics: dict[str, Any]) -> str:
    columns = per_class_rows(metrics)
    lines = ["| " + " | ".join(columns) + " |", "| --- " * len(columns) + "|"]
    lines += [
        "| " + " | ".join(f"{value:.4f}" if isinstance(value, float) else str(value) for value in row) + " |"
        for row in zip(*columns.values(), strict=True)
    ]
    return "\n".join(lines)


def _criterion_value(criterion: dict[str, Any]) -> str:
    return f"{criterion['value']:.4g}" if criterion["name"] == "significantly better" else f"{criterion['value']:.4f}"


def _gate_section(decision: DecisionRecord) -> str:
    """Each criterion of the gate with its value, limit and verdict, and the image-by-image comparison
    with production: a "better" accuracy over a few discordant images is shown for what it is."""
    if not decision.criteria:  # a record written before the gate recorded its criteria, or a forced promotion
        return ""
    lines = [
        "## Gate criteria",
        "",
        "| criterion | value | limit | verdict | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c['name']} | {_criterion_value(c)} | {c['limit']:.4g} | {'pass' if c['passed'] else '**fail**'} | "
        f"{c['text']} |"
        for c in decision.criteria
    ]
    comparison = decision.comparison
    if comparison:
        both_right = comparison["candidate_correct"] - comparison["only_candidate"]
        both_wrong = comparison["total"] - comparison["candidate_correct"] - comparison["only_production"]
        lines += [
            "",
            f"Compared with production {comparison['production']} on the same {comparison['total']} test images:",
            "",
            "| images | count |",
            "| --- | --- |",
            f"| right by both | {both_right} |",
            f"| right by the candidate only | {comparison['only_candidate']} |",
            f"| right by {comparison['production']} only | {comparison['only_production']} |",
            f"| wrong by both | {both_wrong} |",
            f"| exact McNemar p-value (two-sided) | {comparison['p_value']:.4g} |",
        ]
    return "\n".join(lines) + "\n"


def _gate_summary(decision: DecisionRecord) -> str:
    """The gate's criteria in one line each, for the model card."""
    return "".join(
        f"\n  - {c['name']}: {_criterion_value(c)} (limit {c['limit']:.4g}): {'pass' if c['passed'] else 'fail'}"
        for c in decision.criteria or []
    )


def _embedded_card(version_dir: Path) -> str:
    """The version's model card one heading level down, to sit inside the report."""
    card = (version_dir / MODEL_CARD).read_text()
    return "\n".join("#" + line if line.startswith("#") else line for line in card.splitlines())


def render_report(
    decision: DecisionRecord, metrics: dict[str, Any], version_dir: Path, preset: str, files_at: str | None = None
) -> str:
    """The run's report artifact. `version_dir` holds the version's files here; `files_at` is where
    the report says they are (by default `version_dir`; in team mode the version's URL in the store)."""
    champion = decision.production_before or "none yet"
    if decision.champion_accuracy is not None:  # an unchanged run is not compared with production
        champion += f" ({decision.champion_accuracy:.4f})"
    plots = "\n\n".join(f"### {title}\n![{title}]({png_data_uri(version_dir / name)})" for title, name in PLOTS)
    files_at = files_at or str(version_dir)
    where = "in the artifact store" if store.is_url(files_at) else "on the machine that ran the flow"
    files = "\n".join(f"- `{store.join(files_at, path.name)}`" for path in sorted(version_dir.iterdir()))
    return f"""# MNIST training report: {decision.candidate} ({preset})

## Gate decision: **{decision.verdict.upper()}**
{decision.reason}.

| measure | value |
| --- | --- |
| candidate | {decision.candidate} |
| test accuracy | {_interval(metrics)} |
| test loss | {metrics["loss"]:.4f} |
| threshold | {decision.threshold:.4f} |
| production before | {champion} |

{_gate_section(decision)}
## Plots
{plots}

## Per-class accuracy (test split)
{_per_class_table(metrics)}

{_embedded_card(version_dir)}

## Files ({where})
{files}
"""


def _training_data(params: dict[str, Any]) -> str:
    """What the model learnt from: MNIST's official split, plus the extra pictures when the run added
    some (to the train split only: validation and test stay MNIST's, so accuracies compare)."""
    extra = params.get("extra_pictures") or 0
    if not extra:
        return "MNIST (the official train/test split)"
    return (
        f"MNIST's official training images plus {extra} extra picture{'s' if extra != 1 else ''} "
        "(added to the train split only; validation and test are MNIST's)"
    )


def _light_model(record: dict[str, Any]) -> str:
    """The model card's words on the version's light model (`predict` and the service run it)."""
    light = record.get("light_model")
    if light is None:
        return "no light model (registered before them; `mnist-pipeline registry convert` adds one)."
    if not light.get("file"):
        return f"**no light model**: {light['problem']}; Keras serves this version."
    return (
        f"`{light['file']}` (LiteRT, run without TensorFlow by `predict` and the service; on "
        f"{light['verified_on_images']} test images the same top class as Keras and probabilities within "
        f"{light['max_probability_difference']:.1g})."
    )


def render_model_card(
    record: dict[str, Any], params: dict[str, Any], metrics: dict[str, Any], decision: DecisionRecord
) -> str:
    training = params["training"]
    return f"""# Model card: MNIST digit classifier ({record["preset"]})

- **Created**: {record["created"]} (flow run {record["flow_run_id"]})
- **Input**: raw uint8 grayscale images, 28x28, white digit on black (as MNIST); scaling is inside the model.
- **Output**: probabilities of the digits 0-9.
- **Training**: preset `{training["preset"]}`, up to {training["epochs"]} epochs, batch {training["batch_size"]},
  learning rate {training["learning_rate"]}, early stopping patience {training["patience"]}, seed {training["seed"]}.
- **Data**: {_training_data(params)}, split manifest SHA-256 `{record["data_sha256"]}`.
- **Test accuracy**: {_interval(metrics)}.
- **Status at registration**: {record["status"]}.
- **Gate at registration**:{_gate_summary(decision)}
- **Frameworks**: TensorFlow {record["versions"]["tensorflow"]}, Keras {record["versions"]["keras"]}.
- **Files**: `model.keras` (Keras), `saved_model/` (TensorFlow Serving: signature `serving_default` takes
  `image`, uint8 [n, 28, 28], returns `output_0`, probabilities [n, 10]); plots `training_curves.png`
  and `confusion_matrix.png`; `predictions.npz` (each test image's label and predicted class, which the
  gate compares with a later candidate's); {_light_model(record)}

Limitations: trained on centred, size-normalised handwritten digits; accuracy on other kinds of
images (photos, other scripts, unnormalised crops) is unknown.
"""
