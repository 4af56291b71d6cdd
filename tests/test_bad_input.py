"""Bad input is refused up front with a message that names what is wrong and what is allowed.

Fast tier: the parameter model alone (no Prefect, no TensorFlow). What the flow and the command do with
bad input is in test_cli.py and test_run_command.py."""

from __future__ import annotations

import math
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_pipeline.core.modelling.models import PRESETS
from mnist_pipeline.core.modelling.parameters import InvalidParameterError, PipelineParameters, validate_parameters
from mnist_pipeline.core.runs.sweep import SweepParameters

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from([*PRESETS, "bundle", "tfds", "0.5", "3", "-1"]),
)


def _within_documented_range(params: PipelineParameters) -> bool:
    optional_in = lambda value, low, high: value is None or low <= value <= high  # noqa: E731
    return (
        params.preset in PRESETS
        and params.data_source in {"bundle", "tfds"}
        and optional_in(params.epochs, 1, 1000)
        and optional_in(params.batch_size, 1, 54000)
        and optional_in(params.patience, 0, 1000)
        and (params.learning_rate is None or 0 < params.learning_rate <= 1)
        and 0 <= params.seed <= 2**31 - 1
        and 0 < params.validation_fraction <= 0.5
        and 0 < params.threshold <= 1
        and all(not (isinstance(v, float) and math.isnan(v)) for v in params.model_dump().values())
    )


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(PipelineParameters.model_fields) + ["unknown_knob"]), ANY_VALUE, max_size=5)
)
def test_parameters_are_either_in_range_or_refused_by_name(values):
    try:
        params = validate_parameters(values)
    except InvalidParameterError as error:
        message = str(error)
        refused = {name for name, value in values.items() if _refused_alone(name, value)}
        assert refused, f"no parameter is bad on its own, yet: {message}"
        for name, value in values.items():  # every bad one is named with its value, no good one is
            assert (f"{name}={value!r}" in message) == (name in refused), (name, message)
        return
    assert _within_documented_range(params), params


def _refused_alone(name: str, value) -> bool:
    try:
        validate_parameters({name: value})
    except InvalidParameterError:
        return True
    return False


@pytest.mark.parametrize(
    "name, value, allowed",
    [
        ("threshold", 0.0, "> 0 and <= 1"),
        ("epochs", 5000, ">= 1 and <= 1000"),
        ("validation_fraction", 0.75, "> 0 and <= 0.5"),
        ("learning_rate", 0, "> 0 and <= 1"),
    ],
)
def test_message_names_parameter_and_allowed_range(name, value, allowed):
    with pytest.raises(InvalidParameterError) as error:
        validate_parameters({name: value})
    assert f"{name}={value!r}" in str(error.value) and f"(allowed: {allowed})" in str(error.value)


def numeric_fields(model) -> list[str]:
    """The fields of `model` that take a number (or a list of numbers)."""

    def takes(annotation) -> set:
        args = typing.get_args(annotation)
        return {annotation} | {kind for arg in args for kind in takes(arg)} if args else {annotation}

    return [name for name, field in model.model_fields.items() if takes(field.annotation) & {int, float}]


@pytest.mark.parametrize(
    "model, name",
    [(PipelineParameters, name) for name in numeric_fields(PipelineParameters)]
    + [(SweepParameters, name) for name in numeric_fields(SweepParameters)],
)
@pytest.mark.parametrize("value", [False, True])
def test_true_and_false_are_refused_as_numbers_by_name(model, name, value):
    """pydantic would take them as 1 and 0 (hypothesis found `dropout=False` accepted for seed-mlp)."""
    swept = typing.get_origin(model.model_fields[name].annotation) is list
    given = [value] if swept else value
    with pytest.raises(InvalidParameterError) as error:
        validate_parameters({name: given, **({"preset": "seed-mlp"} if name == "dropout" else {})}, model)
    assert f"{name}{'.0' if swept else ''}={value!r}: Input should be a number, not true or false" in str(error.value)
