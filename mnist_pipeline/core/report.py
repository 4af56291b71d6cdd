"""Markdown for people: the run report (a Prefect artifact) and each version's model card."""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.core.decisions import DecisionRecord

LINKED_FILES = (("Training curves", "training_curves.png"), ("Confusion matrix", "confusion_matrix.png"),
                ("Model card", "model_card.md"))


def _interval(metrics: dict) -> str:
    low, high = metrics["accuracy_interval_95"]
    return f"{metrics['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f}, {metrics['correct']}/{metrics['total']})"


def _per_class_table(metrics: dict) -> str:
    rows = ["| class | images | correct | accuracy |", "| --- | --- | --- | --- |"]
    rows += [f"| {r['class']} | {r['count']} | {r['correct']} | {r['accuracy']:.4f} |" for r in metrics["per_class"]]
    return "\n".join(rows)


def _confusion_table(metrics: dict) -> str:
    matrix = metrics["confusion_matrix"]
    rows = ["| true \\ predicted | " + " | ".join(str(c) for c in range(len(matrix))) + " |",
            "| --- " * (len(matrix) + 1) + "|"]
    rows += [f"| **{true}** | " + " | ".join(str(n) for n in row) + " |" for true, row in enumerate(matrix)]
    return "\n".join(rows)


def render_report(decision: DecisionRecord, metrics: dict, version_dir: Path, preset: str) -> str:
    champion = (
        f"{decision.production_before} ({decision.champion_accuracy:.4f})" if decision.production_before else "none yet"
    )
    files = "\n".join(f"- `{path}`" for path in sorted(version_dir.iterdir()))
    links = "\n".join(f"- [{title}]({(version_dir / name).resolve().as_uri()})" for title, name in LINKED_FILES)
    return f"""# MNIST training report: {decision.candidate} ({preset})

## Gate decision: **{decision.verdict.upper()}**
{decision.reason}.

| | |
| --- | --- |
| candidate | {decision.candidate} |
| test accuracy | {_interval(metrics)} |
| test loss | {metrics['loss']:.4f} |
| threshold | {decision.threshold:.4f} |
| production before | {champion} |

## Per-class accuracy
{_per_class_table(metrics)}

## Confusion matrix (test split)
{_confusion_table(metrics)}

## Plots and model card
{links}

## Files
{files}
"""


def render_model_card(record: dict, params: dict, metrics: dict) -> str:
    training = params["training"]
    return f"""# Model card: MNIST digit classifier ({record['preset']})

- **Created**: {record['created']} (flow run {record['flow_run_id']})
- **Input**: raw uint8 grayscale images, 28x28, white digit on black (as MNIST); scaling is inside the model.
- **Output**: probabilities of the digits 0-9.
- **Training**: preset `{training['preset']}`, up to {training['epochs']} epochs, batch {training['batch_size']},
  learning rate {training['learning_rate']}, early stopping patience {training['patience']}, seed {training['seed']}.
- **Data**: MNIST (tensorflow-datasets), split manifest SHA-256 `{record['data_sha256']}`.
- **Test accuracy**: {_interval(metrics)}.
- **Status at registration**: {record['status']}.
- **Frameworks**: TensorFlow {record['versions']['tensorflow']}, Keras {record['versions']['keras']}.
- **Files**: `model.keras` (Keras), `saved_model/` (TensorFlow Serving: signature `serving_default` takes
  `image`, uint8 [n, 28, 28], returns `output_0`, probabilities [n, 10]); plots:
  [training curves](training_curves.png), [confusion matrix](confusion_matrix.png).

Limitations: trained on centred, size-normalised handwritten digits; accuracy on other kinds of
images (photos, other scripts, unnormalised crops) is unknown.
"""
