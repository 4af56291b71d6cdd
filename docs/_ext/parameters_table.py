"""A Sphinx directive that writes a table of a pydantic model's fields: the pipeline's parameters as
the code defines them (name, command-line option, type, default, allowed values, description), so the
manual cannot drift from `PipelineParameters`.

    ```{parameters-table} mnist_pipeline.core.modelling.parameters.PipelineParameters
    ```

Option `:changed-from: module.Model` lists only the fields that are new, or typed differently, in the
model than in that one (a sweep's parameters beside a run's).

    ```{presets-table} mnist_pipeline.core.modelling.models.PRESETS
    ```

writes the presets' training recipes (their `TrainingConfig` defaults) the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from sphinx.util.docutils import SphinxDirective

HEADERS = ("parameter", "type", "default", "allowed", "description")
BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def load(dotted: str) -> type[BaseModel]:
    module, _, name = dotted.rpartition(".")
    model = getattr(importlib.import_module(module), name)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{dotted} is not a pydantic model")
    return model


def type_text(annotation: Any) -> str:
    """`Optional[int]` -> `int or none`, `list[float]` -> `list of float`, `Literal[...]` -> `str`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "str"
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is list:
        return f"list of {type_text(args[0])}"
    if args and type(None) in args:
        return " or ".join([type_text(a) for a in args if a is not type(None)] + ["none"])
    return getattr(annotation, "__name__", str(annotation))


def _constraints(field: FieldInfo, annotation: Any) -> list[Any]:
    """The field's constraints, and those of a list's items (`list[Annotated[float, Gt(0)]]`)."""
    found = list(field.metadata)
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Annotated:
            found.extend(typing.get_args(arg)[1:])
        elif typing.get_args(arg):
            found.extend(_constraints(FieldInfo(), arg))
    return found


def allowed_text(field: FieldInfo) -> str:
    """What a value may be: the choices, the bounds (of each item for a list), or a pattern."""
    annotation = field.annotation
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is typing.Literal:
            return ", ".join(str(choice) for choice in typing.get_args(arg))
    bounds = []
    for constraint in _constraints(field, annotation):
        for name, symbol in BOUNDS:
            if getattr(constraint, name, None) is not None:
                bounds.append(f"{symbol} {getattr(constraint, name)}")
        if getattr(constraint, "pattern", None):
            bounds.append(f"matches {constraint.pattern}")
    text = " and ".join(bounds)
    if typing.get_origin(annotation) is list and text:
        text = f"each {text}"
    if annotation is bool:
        return "true, false"
    return text


def default_text(field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list):
        return "[]" if not default else ", ".join(map(str, default))
    return str(default)


def option_text(name: str, field: FieldInfo) -> str:
    """The command line's option: `--name-with-dashes`; a switch also has its `--no-` form."""
    option = "--" + name.replace("_", "-")
    return f"{option} / --no-{option[2:]}" if field.annotation is bool else option


def rows(model: type[BaseModel], changed_from: type[BaseModel] | None = None) -> list[dict[str, str]]:
    """One row per field of `model` (only those new or retyped since `changed_from`, if given)."""
    found = []
    for name, field in model.model_fields.items():
        if changed_from is not None:
            before = changed_from.model_fields.get(name)
            if before is not None and before.annotation == field.annotation:
                continue
        found.append(
            {
                "parameter": name,
                "option": option_text(name, field),
                "type": type_text(field.annotation),
                "default": default_text(field),
                "allowed": allowed_text(field),
                "description": field.description or "",
            }
        )
    return found


Cell = nodes.Node | list[nodes.Node]  # a list: one paragraph a node


def grid(headers: list[str], widths: list[int], body_rows: list[list[Cell]], classes: list[str]) -> nodes.table:
    """A docutils table: a header row of `headers`, then `body_rows`, columns `widths` wide."""
    group = nodes.tgroup(cols=len(headers))
    for width in widths:
        group += nodes.colspec(colwidth=width)

    def row(cells: list[Cell]) -> nodes.row:
        built = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            for line in cell if isinstance(cell, list) else [cell]:
                entry += nodes.paragraph("", "", line)
            built += entry
        return built

    head = nodes.thead()
    head += row([nodes.Text(header) for header in headers])
    body = nodes.tbody()
    for cells in body_rows:
        body += row(cells)
    group += head
    group += body
    built = nodes.table(classes=classes)
    built += group
    return built


def table(rows_: list[dict[str, str]], model_name: str) -> nodes.table:
    """A docutils table of `rows_`: the name over its option(s), then type, default, allowed, description."""
    body_rows: list[list[Cell]] = [
        [
            [nodes.literal(text, text) for text in (item["parameter"], *item["option"].split(" / "))],
            nodes.Text(item["type"]),
            nodes.literal(item["default"], item["default"]),
            nodes.Text(item["allowed"]),
            nodes.Text(item["description"]),
        ]
        for item in rows_
    ]
    built = grid(list(HEADERS), [20, 10, 10, 14, 36], body_rows, ["parameters-table"])
    built.insert(0, nodes.title("", f"The fields of {model_name}"))
    return built


class ParametersTable(SphinxDirective):
    required_arguments = 1
    option_spec = {"changed-from": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        model = load(self.arguments[0])
        before = load(self.options["changed-from"]) if "changed-from" in self.options else None
        # Rebuild the page when the model's source changes.
        module = importlib.import_module(model.__module__)
        if getattr(module, "__file__", None):
            self.env.note_dependency(module.__file__)
        return [table(rows(model, before), model.__name__)]


def presets_table(presets: dict[str, Any]) -> nodes.table:
    """A table of each preset's defaults: one row a preset, one column a `TrainingConfig` field (the
    seed aside: it is a run's, not a preset's), whether the learning rate decays, and its warm-up."""
    names = [f.name for f in dataclasses.fields(next(iter(presets.values())).defaults) if f.name not in ("seed",)]
    headers = [*(name.replace("_", " ") for name in names), "cosine decay", "warm-up epochs"]
    body_rows: list[list[Cell]] = []
    for preset in presets.values():
        values = [getattr(preset.defaults, name) for name in names]
        cells: list[Cell] = [nodes.literal(str(values[0]), str(values[0]))]
        cells += [nodes.Text("none" if value is None else str(value)) for value in values[1:]]
        cells.append(nodes.Text("yes" if preset.cosine_decay else "no"))
        cells.append(nodes.Text(f"{preset.warmup_epochs:g}"))
        body_rows.append(cells)
    return grid(headers, [10] * len(headers), body_rows, ["presets-table"])


class PresetsTable(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module, _, name = self.arguments[0].rpartition(".")
        loaded = importlib.import_module(module)
        if getattr(loaded, "__file__", None):
            self.env.note_dependency(loaded.__file__)
        return [presets_table(getattr(loaded, name))]


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("parameters-table", ParametersTable)
    app.add_directive("presets-table", PresetsTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
