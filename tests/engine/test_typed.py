"""Tests for workflow.engine.typed: decoding JSON inputs into annotated types, schemas, encoding."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import inspect
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, TypedDict, Union

import pytest

from workflow.engine.typed import InputError, annotation_of, decode, encode, json_schema

# -- types under test (module level so string annotations resolve) ------------------------------------


class Color(enum.Enum):
    """Colour of a label."""

    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class FetchParams:
    url: str
    retries: int = 3
    tags: list[str] = field(default_factory=list)
    mode: Literal["fast", "slow"] = "fast"
    extra: dict[str, Any] | None = None


@dataclass
class Batch:
    """A batch of fetches to run together.

    The second line is not part of the description.
    """

    items: list[FetchParams]
    color: Color = Color.RED
    started: dt.datetime | None = None
    note: str = field(default="", metadata={"description": "Shown on the run page"})
    count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.count = len(self.items)


@dataclass
class Scheduled:
    when: dt.datetime
    day: dt.date
    window: tuple[int, ...] = ()
    pair: tuple[str, int] | None = None


@dataclass
class Validated:
    size: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("size must not be negative")


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)


_SENTINEL = object()


@dataclass
class Holder:
    moment: dt.datetime = dt.datetime(2024, 1, 2, 3, 4, 5)
    anything: Any = None
    obj: object = None
    marker: Any = _SENTINEL


class Address(TypedDict):
    street: str
    city: str


class Contact(Address, total=False):
    phone: str


# -- decode: scalars ------------------------------------------------------------------------------------


def test_decode__returns_the_value_unchanged_when_there_is_no_annotation() -> None:
    value = {"anything": [1, 2]}
    assert decode(None, value) is value
    assert decode(inspect.Parameter.empty, value) is value


@pytest.mark.parametrize("tp", [Any, object])
def test_decode__passes_anything_through_for_any_and_object(tp: Any) -> None:
    value = {"a": [1, None]}
    assert decode(tp, value) is value


def test_decode__accepts_strings_and_rejects_other_values_for_str() -> None:
    assert decode(str, "hi") == "hi"
    with pytest.raises(InputError, match="^expected a string, got int$"):
        decode(str, 5)


def test_decode__accepts_integers_for_int() -> None:
    assert decode(int, 7) == 7


def test_decode__rejects_a_bool_where_an_int_is_expected() -> None:
    with pytest.raises(InputError, match="^expected an integer, got bool$"):
        decode(int, True)


def test_decode__rejects_floats_for_int_even_when_integral() -> None:
    with pytest.raises(InputError, match="expected an integer, got float"):
        decode(int, 3.0)


def test_decode__accepts_ints_for_float_and_converts_them() -> None:
    result = decode(float, 2)
    assert result == 2.0 and isinstance(result, float)
    assert decode(float, 1.5) == 1.5


def test_decode__rejects_a_bool_where_a_float_is_expected() -> None:
    with pytest.raises(InputError, match="expected a number, got bool"):
        decode(float, False)


def test_decode__accepts_only_real_booleans_for_bool() -> None:
    assert decode(bool, False) is False
    with pytest.raises(InputError, match="expected a boolean, got int"):
        decode(bool, 1)


def test_decode__accepts_only_null_for_none_type() -> None:
    assert decode(type(None), None) is None
    assert decode(list[None], [None]) == [None]
    with pytest.raises(InputError, match="^expected null, got string$"):
        decode(type(None), "x")


def test_decode__unwraps_annotated() -> None:
    assert decode(Annotated[int, "meta"], 4) == 4
    with pytest.raises(InputError, match="expected an integer"):
        decode(Annotated[int, "meta"], "4")


# -- decode: unions, literals, enums, dates -------------------------------------------------------------


@pytest.mark.parametrize("tp", [int | None, Optional[int], Union[int, None]])  # noqa: UP007, UP045
def test_decode__accepts_null_or_the_inner_type_for_optional(tp: Any) -> None:
    assert decode(tp, None) is None
    assert decode(tp, 3) == 3


def test_decode__reports_the_inner_error_for_a_bad_optional_value() -> None:
    with pytest.raises(InputError, match="^expected one of 'fast', 'slow', got 'x'$"):
        decode(Literal["fast", "slow"] | None, "x")


def test_decode__tries_union_members_in_order() -> None:
    assert decode(int | str, 3) == 3
    assert decode(int | str, "3") == "3"
    assert decode(int | bool, True) is True
    assert decode(int | float, 2.5) == 2.5


def test_decode__says_which_types_a_value_did_not_match_in_a_union() -> None:
    with pytest.raises(InputError, match=r"^does not match any of int \| str, got float$"):
        decode(int | str, 1.5)


def test_decode__reports_the_best_matching_union_member_error() -> None:
    with pytest.raises(InputError) as exc:
        decode(list[int] | FetchParams, {"url": 5})
    assert exc.value.path == "url"
    assert exc.value.problem == "expected a string, got int"


def test_decode__accepts_literal_values() -> None:
    assert decode(Literal["fast", "slow"], "slow") == "slow"
    assert decode(Literal[1, 2], 2) == 2


def test_decode__rejects_values_outside_a_literal() -> None:
    with pytest.raises(InputError, match="^expected one of 'fast', 'slow', got 'x'$"):
        decode(Literal["fast", "slow"], "x")


def test_decode__does_not_confuse_true_with_1_in_a_literal() -> None:
    with pytest.raises(InputError):
        decode(Literal[1, 2], True)
    assert decode(Literal[1, True], True) is True
    assert decode(Literal[1, True], 1) == 1 and decode(Literal[1, True], 1) is not True


def test_decode__turns_values_into_enum_members() -> None:
    assert decode(Color, "green") is Color.GREEN
    assert decode(Priority, 2) is Priority.HIGH


def test_decode__rejects_unknown_enum_values_listing_the_choices() -> None:
    with pytest.raises(InputError, match="^expected one of 'red', 'green', got 'blue'$"):
        decode(Color, "blue")
    with pytest.raises(InputError):
        decode(Priority, True)


def test_decode__parses_iso_8601_datetimes_and_dates() -> None:
    result = decode(Scheduled, {"when": "2024-05-01T12:30:00+00:00", "day": "2024-05-02"})
    assert result.when == dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    assert result.day == dt.date(2024, 5, 2)
    assert decode(dt.datetime, "2024-05-01T12:30:00Z").tzinfo == dt.UTC


def test_decode__rejects_malformed_datetimes_naming_the_field() -> None:
    with pytest.raises(InputError, match="^when: expected an ISO-8601 date-time, got 'yesterday'$"):
        decode(Scheduled, {"when": "yesterday", "day": "2024-05-02"})
    with pytest.raises(InputError, match="^day: expected an ISO-8601 date string, got int$"):
        decode(Scheduled, {"when": "2024-05-01T00:00:00", "day": 20240502})


# -- decode: containers ---------------------------------------------------------------------------------


def test_decode__decodes_every_item_of_a_list() -> None:
    assert decode(list[int], [1, 2]) == [1, 2]
    with pytest.raises(InputError, match=r"^\[1\]: expected an integer, got string$"):
        decode(list[int], [1, "2"])


def test_decode__names_list_indexes_at_the_root() -> None:
    with pytest.raises(InputError, match=r"^\[2\].url: missing required field$"):
        decode(list[FetchParams], [{"url": "a"}, {"url": "b"}, {}])


def test_decode__rejects_a_non_array_for_a_list() -> None:
    with pytest.raises(InputError, match="expected an array, got object"):
        decode(list[int], {"a": 1})


def test_decode__builds_tuples_from_arrays() -> None:
    assert decode(tuple[int, ...], [1, 2, 3]) == (1, 2, 3)
    assert decode(tuple[str, int], ["a", 1]) == ("a", 1)
    with pytest.raises(InputError, match="expected an array of 2 items, got 3"):
        decode(tuple[str, int], ["a", 1, 2])


def test_decode__decodes_dict_values_and_names_the_bad_key() -> None:
    assert decode(dict[str, int], {"a": 1}) == {"a": 1}
    with pytest.raises(InputError, match="^limits.cpu: expected an integer, got string$"):
        decode(dict[str, dict[str, int]], {"limits": {"cpu": "2"}})
    with pytest.raises(InputError, match=r'^\["a b"\]: expected an integer'):
        decode(dict[str, int], {"a b": "x"})


def test_decode__accepts_bare_dict_and_list_as_copies() -> None:
    original_dict, original_list = {"a": [1]}, [1, {"b": 2}]
    assert decode(dict, original_dict) == original_dict and decode(dict, original_dict) is not original_dict
    assert decode(list, original_list) == original_list
    with pytest.raises(InputError, match="expected an object, got array"):
        decode(dict, [])


# -- decode: dataclasses and TypedDicts -------------------------------------------------------------------


def test_decode__builds_a_dataclass_and_fills_in_defaults() -> None:
    result = decode(FetchParams, {"url": "https://example.com"})
    assert result == FetchParams(url="https://example.com", retries=3, tags=[], mode="fast", extra=None)


def test_decode__decodes_every_field_of_a_dataclass() -> None:
    value = {"url": "u", "retries": 5, "tags": ["a"], "mode": "slow", "extra": {"k": [1]}}
    assert decode(FetchParams, value) == FetchParams("u", 5, ["a"], "slow", {"k": [1]})


def test_decode__builds_nested_dataclasses() -> None:
    result = decode(Batch, {"items": [{"url": "a"}, {"url": "b", "retries": 0}], "color": "green"})
    assert result.items == [FetchParams("a"), FetchParams("b", retries=0)]
    assert result.color is Color.GREEN
    assert result.count == 2


def test_decode__names_the_nested_field_that_failed() -> None:
    with pytest.raises(InputError) as exc:
        decode(Batch, {"items": [{"url": "a"}, {"url": 42}]})
    assert exc.value.path == "items[1].url"
    assert exc.value.problem == "expected a string, got int"
    assert str(exc.value) == "items[1].url: expected a string, got int"


def test_decode__reports_a_missing_required_field() -> None:
    with pytest.raises(InputError, match="^items\\[0\\].url: missing required field$"):
        decode(Batch, {"items": [{"retries": 1}]})


def test_decode__rejects_unknown_fields_naming_the_key() -> None:
    with pytest.raises(InputError) as exc:
        decode(FetchParams, {"url": "u", "urll": "typo"})
    assert exc.value.path == "urll"
    assert str(exc.value) == "urll: unexpected field"


def test_decode__rejects_a_non_object_for_a_dataclass() -> None:
    with pytest.raises(InputError, match="^expected an object, got string$"):
        decode(FetchParams, "https://example.com")


def test_decode__tolerates_but_ignores_init_false_fields() -> None:
    result = decode(Batch, {"items": [], "count": 99})
    assert result.count == 0


def test_decode__turns_post_init_errors_into_input_errors() -> None:
    with pytest.raises(InputError, match="^size must not be negative$"):
        decode(Validated, {"size": -1})
    with pytest.raises(InputError, match=r"^\[0\]: size must not be negative$"):
        decode(list[Validated], [{"size": -1}])


def test_decode__handles_recursive_dataclasses() -> None:
    result = decode(Node, {"name": "root", "children": [{"name": "leaf"}]})
    assert result == Node("root", [Node("leaf")])


def test_decode__builds_a_typeddict_with_required_and_optional_keys() -> None:
    assert decode(Contact, {"street": "Main", "city": "X"}) == {"street": "Main", "city": "X"}
    full = {"street": "Main", "city": "X", "phone": "123"}
    assert decode(Contact, full) == full


def test_decode__reports_typeddict_problems_by_key() -> None:
    with pytest.raises(InputError, match="^city: missing required field$"):
        decode(Contact, {"street": "Main"})
    with pytest.raises(InputError, match="^zip: unexpected field$"):
        decode(Contact, {"street": "Main", "city": "X", "zip": "1"})
    with pytest.raises(InputError, match="^phone: expected a string, got int$"):
        decode(Contact, {"street": "Main", "city": "X", "phone": 1})


def test_decode__never_mutates_its_input() -> None:
    value = {"items": [{"url": "a", "tags": ["x"]}], "color": "red", "started": "2024-01-01T00:00:00"}
    snapshot = json.loads(json.dumps(value))
    decode(Batch, value)
    assert value == snapshot


def test_decode__raises_type_error_for_unsupported_annotations() -> None:
    with pytest.raises(TypeError, match="unsupported input type"):
        decode(complex, 1)


def test_input_error__is_a_value_error_with_path_and_problem() -> None:
    err = InputError("a.b", "bad")
    assert isinstance(err, ValueError)
    assert (err.path, err.problem, str(err)) == ("a.b", "bad", "a.b: bad")
    assert str(InputError("", "bad")) == "bad"


# -- json_schema ----------------------------------------------------------------------------------------


def test_json_schema__maps_scalars_to_json_types() -> None:
    assert json_schema(str) == {"type": "string"}
    assert json_schema(int) == {"type": "integer"}
    assert json_schema(float) == {"type": "number"}
    assert json_schema(bool) == {"type": "boolean"}
    assert json_schema(type(None)) == {"type": "null"}
    assert json_schema(Any) == {} and json_schema(None) == {}


def test_json_schema__uses_type_arrays_for_optional_values() -> None:
    assert json_schema(str | None) == {"type": ["string", "null"]}
    assert json_schema(int | str) == {"type": ["integer", "string"]}
    assert json_schema(Literal["a"] | None) == {"type": ["string", "null"], "enum": ["a", None]}


def test_json_schema__uses_any_of_for_unions_of_complex_types() -> None:
    schema = json_schema(list[int] | Color | None)
    assert schema["anyOf"][0] == {"type": "array", "items": {"type": "integer"}}
    assert schema["anyOf"][-1] == {"type": "null"}


def test_json_schema__lists_literal_and_enum_choices() -> None:
    assert json_schema(Literal["fast", "slow"]) == {"type": "string", "enum": ["fast", "slow"]}
    assert json_schema(Color) == {
        "title": "Color",
        "description": "Colour of a label.",
        "type": "string",
        "enum": ["red", "green"],
    }
    assert json_schema(Priority)["enum"] == [1, 2]


def test_json_schema__describes_containers_and_dates() -> None:
    assert json_schema(list[str]) == {"type": "array", "items": {"type": "string"}}
    assert json_schema(tuple[int, ...]) == {"type": "array", "items": {"type": "integer"}}
    assert json_schema(dict[str, int]) == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert json_schema(dict) == {"type": "object"} and json_schema(list) == {"type": "array"}
    assert json_schema(dt.datetime) == {"type": "string", "format": "date-time"}
    assert json_schema(dt.date) == {"type": "string", "format": "date"}
    assert json_schema(tuple[str, int])["prefixItems"] == [{"type": "string"}, {"type": "integer"}]


def test_json_schema__describes_a_nested_dataclass() -> None:
    assert json_schema(Batch) == {
        "title": "Batch",
        "description": "A batch of fetches to run together.",
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "title": "FetchParams",
                    "type": "object",
                    "properties": {
                        "url": {"type": "string"},
                        "retries": {"type": "integer", "default": 3},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                        "extra": {"type": ["object", "null"], "default": None},
                    },
                    "required": ["url"],
                    "additionalProperties": False,
                },
            },
            "color": {
                "title": "Color",
                "description": "Colour of a label.",
                "type": "string",
                "enum": ["red", "green"],
                "default": "red",
            },
            "started": {"type": ["string", "null"], "format": "date-time", "default": None},
            "note": {"type": "string", "description": "Shown on the run page", "default": ""},
        },
        "required": ["items"],
        "additionalProperties": False,
    }


def test_json_schema__ignores_the_docstring_dataclasses_generate() -> None:
    assert FetchParams.__doc__ and FetchParams.__doc__.startswith("FetchParams(")
    assert "description" not in json_schema(FetchParams)


def test_json_schema__encodes_defaults_and_skips_unserialisable_ones() -> None:
    props = json_schema(Holder)["properties"]
    assert props["moment"]["default"] == "2024-01-02T03:04:05"
    assert props["anything"] == {"default": None} and props["obj"] == {"default": None}
    assert props["marker"] == {}


def test_json_schema__stops_expanding_recursive_dataclasses() -> None:
    schema = json_schema(Node)
    assert schema["properties"]["children"]["items"] == {"type": "object", "title": "Node"}


def test_json_schema__describes_a_typeddict_with_its_required_keys() -> None:
    assert json_schema(Contact) == {
        "title": "Contact",
        "type": "object",
        "properties": {"street": {"type": "string"}, "city": {"type": "string"}, "phone": {"type": "string"}},
        "required": ["street", "city"],
        "additionalProperties": False,
    }


def test_json_schema__is_json_serialisable() -> None:
    json.dumps(json_schema(Batch))


# -- encode ---------------------------------------------------------------------------------------------


def test_encode__leaves_json_native_values_unchanged() -> None:
    value = {"a": [1, 2.5, "x", True, None], "b": {}}
    assert encode(value) == value
    assert encode(3) == 3 and encode(None) is None


def test_encode__converts_dataclasses_enums_dates_and_tuples() -> None:
    value = Scheduled(when=dt.datetime(2024, 5, 1, 12, 0), day=dt.date(2024, 5, 2), window=(1, 2))
    assert encode(value) == {
        "when": "2024-05-01T12:00:00",
        "day": "2024-05-02",
        "window": [1, 2],
        "pair": None,
    }
    assert encode({Color.RED: Priority.HIGH}) == {"red": 2}


def test_encode__round_trips_through_decode() -> None:
    original = Batch(
        items=[FetchParams("a", tags=["t"], mode="slow", extra={"k": 1})],
        color=Color.GREEN,
        started=dt.datetime(2024, 1, 1, 9, 30, tzinfo=dt.UTC),
    )
    encoded = encode(original)
    assert json.loads(json.dumps(encoded)) == encoded
    assert encoded["count"] == 1
    assert decode(Batch, encoded) == original


# -- annotation_of --------------------------------------------------------------------------------------


def fetch(params: FetchParams, ctx: Any = None) -> None:
    """Executor-shaped function; its annotations are strings because of the __future__ import."""


def untyped(params, ctx):  # type: ignore[no-untyped-def]
    return params


def variadic(first: int, *rest: Color) -> None:
    pass


class Runner:
    def run(self, params: Batch) -> None:
        pass

    def __call__(self, params: list[FetchParams]) -> None:
        pass


def test_annotation_of__resolves_string_annotations_from_future_import() -> None:
    assert fetch.__annotations__["params"] == "FetchParams"
    assert annotation_of(fetch, 0) is FetchParams
    assert annotation_of(fetch, 1) is Any


def test_annotation_of__returns_none_for_missing_annotations_or_positions() -> None:
    assert annotation_of(untyped, 0) is None
    assert annotation_of(fetch, 5) is None
    assert annotation_of(print, 0) is None


def test_annotation_of__uses_the_star_args_annotation_past_the_named_parameters() -> None:
    assert annotation_of(variadic, 0) is int
    assert annotation_of(variadic, 3) is Color


def test_annotation_of__handles_methods_callable_objects_and_partials() -> None:
    assert annotation_of(Runner().run, 0) is Batch
    assert annotation_of(Runner(), 0) == list[FetchParams]
    assert annotation_of(functools.partial(fetch, ctx=1), 0) is FetchParams


def test_annotation_of__feeds_decode() -> None:
    params = decode(annotation_of(fetch, 0), {"url": "u"})
    assert params == FetchParams("u")
    assert dataclasses.is_dataclass(params)
