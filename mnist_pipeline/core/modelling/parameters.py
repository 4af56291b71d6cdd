"""The flow's parameters: names, types, defaults, allowed values and help, defined once.

`PipelineParameters` is the one definition. The command line builds its options from it, and the
flow takes its signature from it (`takes_parameters`), so Prefect's parameter schema and the
deployment's Run form show the same types, choices, defaults and descriptions. Kept free of Prefect
and TensorFlow so that `--help` and bad values answer at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, overload

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from mnist_pipeline.core.modelling.models import PRESETS, ConfigError, training_config
from mnist_pipeline.core.support.errors import PermanentError


class InvalidParameterError(PermanentError):
    pass


def _not_a_bool(value: object) -> object:
    """Refuse True/False for a number: pydantic would take them as 1 and 0 (`dropout=False` as 0.0)."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_is_not_a_number", "Input should be a number, not true or false")
    return value


NOT_BOOL = BeforeValidator(_not_a_bool)  # in a numeric field's metadata, so sweeps and Prefect's schema carry it


class PipelineParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["cnn", "cnn-best", "mlp", "seed-mlp"] = Field(
        default="cnn",
        description="model preset: " + "; ".join(f"{name}, {preset.description}" for name, preset in PRESETS.items()),
    )
    epochs: Annotated[int | None, NOT_BOOL] = Field(
        default=None, ge=1, le=1000, description="maximum epochs (default: the preset's)"
    )
    batch_size: Annotated[int | None, NOT_BOOL] = Field(
        default=None, ge=1, le=54000, description="batch size (default: the preset's)"
    )
    learning_rate: Annotated[float | None, NOT_BOOL] = Field(
        default=None, gt=0, le=1, description="Adam learning rate (default: the preset's)"
    )
    patience: Annotated[int | None, NOT_BOOL] = Field(
        default=None, ge=0, le=1000, description="early-stopping patience in epochs (default: the preset's)"
    )
    width: Annotated[int | None, NOT_BOOL] = Field(
        default=None,
        ge=1,
        le=4096,
        description="units of the first dense layer; the mlp's second has half (default: the preset's)",
    )
    dropout: Annotated[float | None, NOT_BOOL] = Field(
        default=None,
        ge=0,
        lt=1,
        description="dropout rate, for the presets with a dropout layer: "
        + ", ".join(name for name, preset in PRESETS.items() if preset.defaults.dropout is not None)
        + " (default: the preset's)",
    )
    seed: Annotated[int, NOT_BOOL] = Field(
        default=42, ge=0, le=2**31 - 1, description="seed of the validation split and of training"
    )
    validation_fraction: Annotated[float, NOT_BOOL] = Field(
        default=0.1, gt=0, le=0.5, description="share of train held out for validation"
    )
    threshold: Annotated[float, NOT_BOOL] = Field(
        default=0.97, gt=0, le=1, description="minimum test accuracy for promotion to production"
    )
    per_class_floor: Annotated[float, NOT_BOOL] = Field(
        default=0.95, ge=0, le=1, description="minimum test accuracy of every class (digit) for promotion"
    )
    per_class_margin: Annotated[float, NOT_BOOL] = Field(
        default=0.01,
        ge=0,
        le=1,
        description="most a class's test accuracy may fall below production's on it for promotion",
    )
    require_significant: bool = Field(
        default=False,
        description="promote only a candidate significantly better than production (exact McNemar test on "
        "the test images only one of them gets right); otherwise not worse is enough",
    )
    significance_alpha: Annotated[float, NOT_BOOL] = Field(
        default=0.05, gt=0, lt=1, description="significance level of the McNemar test against production"
    )
    force_retrain: bool = Field(
        default=False,
        description="train even when a model with the same inputs (data, configuration, seed, code, "
        "framework versions) was trained before, instead of taking it from the cache",
    )
    data_source: Literal["bundle", "tfds"] = Field(
        "bundle",
        description="bundle: the MNIST files shipped with the package (offline); tfds: tensorflow-datasets' download",
    )
    bundle_dir: str | None = Field(
        default=None, description="folder of the four MNIST IDX .gz files (default: the copy shipped with the package)"
    )
    extra_data: str | None = Field(
        default=None,
        description="folder of extra labelled pictures for training: one sub-folder per class, 0 to 9, "
        "of PNG/JPEG pictures (default: none)",
    )
    artifacts_dir: str | None = Field(
        default=None,
        description="where splits, runs and the registry go (default: $MNIST_ARTIFACTS_DIR or ./artifacts)",
    )
    mlflow_uri: str | None = Field(
        default=None,
        description="MLflow tracking server to mirror runs and the registry to, e.g. http://127.0.0.1:5000; "
        "credentials only from MLFLOW_TRACKING_USERNAME/PASSWORD or TOKEN (default: $MLFLOW_TRACKING_URI; "
        "neither: MLflow off)",
    )
    mlflow_experiment: str | None = Field(
        default=None, description="MLflow experiment of the runs (default: $MLFLOW_EXPERIMENT_NAME or mnist)"
    )
    mlflow_model: str = Field(default="mnist", description="MLflow registered model that mirrors the registry")
    mlflow_optional: bool = Field(
        default=False,
        description="when the MLflow server does not answer at the start, warn and train without it instead "
        "of stopping before any work",
    )

    @field_validator("dropout")
    @classmethod
    def _dropout_needs_a_dropout_layer(cls, dropout: float | None, info: ValidationInfo) -> float | None:
        if dropout is not None and "preset" in info.data:
            try:
                training_config(info.data["preset"], 0, dropout=dropout)
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return dropout


DATA_FIELDS = ("data_source", "bundle_dir", "extra_data", "artifacts_dir")
# The parameters that say which data a run trains on (and where its registry is): the change check's.
_DATA_FIELDS: dict[str, Any] = {
    name: (PipelineParameters.model_fields[name].annotation, PipelineParameters.model_fields[name])
    for name in DATA_FIELDS
}
if TYPE_CHECKING:  # a model built at run time has no static type: what the type checker is told of this one

    class DataParameters(BaseModel):
        data_source: Literal["bundle", "tfds"]
        bundle_dir: str | None
        extra_data: str | None
        artifacts_dir: str | None
else:
    DataParameters = create_model("DataParameters", __config__=ConfigDict(extra="forbid", frozen=True), **_DATA_FIELDS)


def allowed(field_name: str) -> str:
    """What a numeric parameter allows, e.g. ">= 1 and <= 1000" (empty for the others)."""
    field = PipelineParameters.model_fields[field_name]
    bounds = []
    for constraint in field.metadata:
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if hasattr(constraint, name):
                bounds.append(f"{symbol} {getattr(constraint, name)}")
    return " and ".join(bounds)


ParametersT = TypeVar("ParametersT", bound=BaseModel)


@overload
def validate_parameters(values: dict[str, Any]) -> PipelineParameters: ...


@overload
def validate_parameters(values: dict[str, Any], model: type[ParametersT]) -> ParametersT: ...


def validate_parameters(values: dict[str, Any], model: type[BaseModel] = PipelineParameters) -> BaseModel:
    """Build the parameters (of `model`: a sweep's parameters reuse these fields), or raise one error
    naming each bad parameter and what it allows."""
    try:
        return model(**values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = ".".join(str(part) for part in item["loc"]) or "parameters"
            # a list's item, e.g. learning_rate.1, allows what its field does
            field = str(item["loc"][0]) if item["loc"] else ""
            limits = allowed(field) if field in PipelineParameters.model_fields else ""
            hint = f" (allowed: {limits})" if limits else ""
            problems.append(f"{name}={item.get('input')!r}: {item['msg']}{hint}")
        raise InvalidParameterError("Invalid parameter " + "; ".join(problems)) from None


def signature(model: type[BaseModel] = PipelineParameters) -> inspect.Signature:
    """`model`'s fields as a keyword-only function signature: each field's type annotated with
    its constraints and description, and its default."""
    return inspect.Signature(
        [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=field.default,
                annotation=Annotated[field.annotation, *field.metadata, Field(description=field.description)],
            )
            for name, field in model.model_fields.items()
        ]
    )


FunctionT = TypeVar("FunctionT", bound=Callable[..., Any])


def takes_parameters(function: FunctionT, model: type[BaseModel] = PipelineParameters) -> FunctionT:
    """Give `function(**values)` the signature of `model` (`PipelineParameters` unless another is
    given), and an `Args:` section in its docstring with each parameter's description (Prefect reads
    both for the parameter schema)."""
    # inspect.signature reads `__signature__`; mypy does not know that a function takes any attribute
    function.__signature__ = signature(model).replace(  # type: ignore[attr-defined]
        return_annotation=inspect.signature(function).return_annotation
    )
    arguments = "\n".join(f"    {name}: {field.description}" for name, field in model.model_fields.items())
    function.__doc__ = f"{inspect.cleandoc(function.__doc__ or '')}\n\nArgs:\n{arguments}\n"
    return function
