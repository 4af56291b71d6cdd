"""The flow's parameters are defined once, in `PipelineParameters`: the flow's signature, Prefect's
parameter schema (the deployment's Run form) and the messages for bad values all come from it."""

from __future__ import annotations

import inspect
import types
import typing

import pytest
from annotated_types import Ge, Gt, Le, Lt

from mnist_pipeline.core.modelling.models import PRESETS
from mnist_pipeline.core.modelling.parameters import (
    InvalidParameterError,
    PipelineParameters,
    allowed,
    validate_parameters,
)
from mnist_pipeline.core.support.errors import PermanentError

FIELDS = PipelineParameters.model_fields
JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}
JSON_BOUNDS = {
    Ge: ("minimum", "ge"),
    Gt: ("exclusiveMinimum", "gt"),
    Le: ("maximum", "le"),
    Lt: ("exclusiveMaximum", "lt"),
}


@pytest.fixture(scope="module")
def flow():
    from mnist_pipeline.flows.mnist_flow import mnist_pipeline

    return mnist_pipeline


def json_schema_of(annotation, metadata) -> dict:
    """What a form should offer for a field of this type: JSON type, choices and bounds."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        [present] = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return {"anyOf": [json_schema_of(present, metadata), {"type": "null"}]}
    if typing.get_origin(annotation) is typing.Literal:
        choices = list(typing.get_args(annotation))
        return {"enum": choices, "type": JSON_TYPES[type(choices[0])]}
    bounds = {
        key: getattr(constraint, attribute)
        for constraint in metadata
        for kind, (key, attribute) in JSON_BOUNDS.items()
        if isinstance(constraint, kind)
    }
    return {"type": JSON_TYPES[annotation], **bounds}


def test_the_flow_takes_exactly_the_parameters_as_keyword_arguments(flow):
    signature = inspect.signature(flow.fn)
    assert list(signature.parameters) == list(FIELDS)
    for name, parameter in signature.parameters.items():
        field = FIELDS[name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameter.default == field.default, name
        assert typing.get_origin(parameter.annotation) is typing.Annotated, name
        annotation, *metadata = typing.get_args(parameter.annotation)
        assert annotation == field.annotation, name
        assert metadata[:-1] == field.metadata, name  # the bounds
        assert metadata[-1].description == field.description, name
        assert f"    {name}: {field.description}\n" in flow.fn.__doc__, name


def test_prefects_parameter_schema_shows_each_parameters_type_default_choices_and_description(flow):
    schema = flow.parameters.model_dump()
    assert list(schema["properties"]) == list(FIELDS) and schema["required"] == []
    for position, (name, field) in enumerate(FIELDS.items()):
        shown = dict(schema["properties"][name])
        assert shown.pop("title") == name and shown.pop("position") == position, name
        assert shown == {
            "default": field.default,
            "description": field.description,
            **json_schema_of(field.annotation, field.metadata),
        }, name


def test_the_schema_offers_the_choices_of_literal_parameters(flow):
    properties = flow.parameters.model_dump()["properties"]
    assert properties["preset"]["enum"] == list(PRESETS) and properties["preset"]["default"] == "cnn"
    for name, preset in PRESETS.items():  # the Run form and --help list each preset with what it reaches
        assert f"{name}, {preset.description}" in properties["preset"]["description"]
    assert properties["data_source"]["enum"] == ["bundle", "tfds"]
    assert properties["epochs"]["anyOf"] == [{"type": "integer", "minimum": 1, "maximum": 1000}, {"type": "null"}]
    threshold = properties["threshold"]
    assert (threshold["type"], threshold["exclusiveMinimum"], threshold["maximum"], threshold["default"]) == (
        "number",
        0,
        1,
        0.97,
    )


def test_defaults_need_no_values():
    params = validate_parameters({})
    assert params == PipelineParameters() and params.preset == "cnn" and params.threshold == 0.97
    assert validate_parameters({"preset": "mlp", "epochs": 3}).epochs == 3


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"epochs": 0},
            "Invalid parameter epochs=0: Input should be greater than or equal to 1 (allowed: >= 1 and <= 1000)",
        ),
        (
            {"validation_fraction": 0.6},
            "validation_fraction=0.6: Input should be less than or equal to 0.5 (allowed: > 0 and <= 0.5)",
        ),
        ({"threshold": 0}, "threshold=0: Input should be greater than 0 (allowed: > 0 and <= 1)"),
        ({"preset": "big"}, "preset='big': Input should be 'cnn', 'cnn-best', 'mlp' or 'seed-mlp'"),
        ({"data_source": "web"}, "data_source='web': Input should be 'bundle' or 'tfds'"),
        ({"seed": "abc"}, "seed='abc': Input should be a valid integer"),
        ({"colour": "red"}, "colour='red': Extra inputs are not permitted"),
    ],
)
def test_a_bad_value_is_named_with_what_it_allows(values, message):
    with pytest.raises(InvalidParameterError) as error:
        validate_parameters(values)
    assert message in str(error.value)
    assert isinstance(error.value, PermanentError)  # retrying cannot help
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no pydantic traceback


def test_every_bad_value_is_named_in_one_error():
    with pytest.raises(InvalidParameterError) as error:
        validate_parameters({"epochs": 0, "preset": "big", "batch_size": 10**6})
    text = str(error.value)
    assert text.startswith("Invalid parameter ") and text.count("; ") == 2
    for name in ("epochs=0", "preset='big'", "batch_size=1000000"):
        assert name in text


@pytest.mark.parametrize(
    "name, limits",
    [
        ("epochs", ">= 1 and <= 1000"),
        ("learning_rate", "> 0 and <= 1"),
        ("seed", ">= 0 and <= 2147483647"),
        ("preset", ""),
        ("bundle_dir", ""),
    ],
)
def test_allowed_states_the_bounds(name, limits):
    assert allowed(name) == limits
