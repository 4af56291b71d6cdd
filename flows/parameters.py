"""The flow's parameters: names, types, defaults, allowed ranges and help, in one place.

Kept free of Prefect and TensorFlow so the command line can answer `--help` and reject bad values
at once. The flow's signature mirrors these fields (a test holds the two together).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.errors import PermanentError


class InvalidParameterError(PermanentError):
    pass


class PipelineParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["cnn", "mlp", "seed-mlp"] = Field(
        "cnn", description="model preset: cnn (>= 99%), mlp (fast, >= 97.5%), seed-mlp (the tutorial as written)")
    epochs: Optional[int] = Field(None, ge=1, le=1000, description="maximum epochs (default: the preset's)")
    batch_size: Optional[int] = Field(None, ge=1, le=54000, description="batch size (default: the preset's)")
    learning_rate: Optional[float] = Field(None, gt=0, le=1, description="Adam learning rate (default: the preset's)")
    patience: Optional[int] = Field(
        None, ge=0, le=1000, description="early-stopping patience in epochs (default: the preset's)")
    seed: int = Field(42, ge=0, le=2**31 - 1, description="seed of the validation split and of training")
    validation_fraction: float = Field(0.1, gt=0, le=0.5, description="share of train held out for validation")
    threshold: float = Field(0.97, gt=0, le=1, description="minimum test accuracy for promotion to production")
    data_source: Literal["bundle", "tfds"] = Field(
        "bundle", description="bundle: the MNIST files shipped in data/mnist (offline); tfds: tensorflow-datasets' download")
    bundle_dir: Optional[str] = Field(None, description="folder of the four MNIST IDX .gz files (default: data/mnist)")
    artifacts_dir: Optional[str] = Field(
        None, description="where splits, runs and the registry go (default: $MNIST_ARTIFACTS_DIR or artifacts/)")


def _allowed(field_name: str) -> str:
    field = PipelineParameters.model_fields[field_name]
    bounds = []
    for constraint in field.metadata:
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if hasattr(constraint, name):
                bounds.append(f"{symbol} {getattr(constraint, name)}")
    return " and ".join(bounds)


def validate_parameters(values: dict) -> PipelineParameters:
    """Build the parameters, or raise one error naming each bad parameter and what it allows."""
    try:
        return PipelineParameters(**values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = ".".join(str(part) for part in item["loc"]) or "parameters"
            allowed = _allowed(name) if name in PipelineParameters.model_fields else ""
            hint = f" (allowed: {allowed})" if allowed else ""
            problems.append(f"{name}={item.get('input')!r}: {item['msg']}{hint}")
        raise InvalidParameterError("Invalid parameter " + "; ".join(problems)) from None
