"""Structured output: extracting Kimi's JSON answer, schema checks and the re-ask."""

from __future__ import annotations

import urllib.request

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.request import ResponseFormat
from server.emulation import structured
from server.emulation.structured import check_answer, reask_prompt, schema_problem

OBJECT = ResponseFormat("json_object")
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                   "pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}}},
    "required": ["name", "age"],
    "additionalProperties": False,
    "$defs": {"Pet": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}},
                      "required": ["kind"]}},
}
PERSON = ResponseFormat("json_schema", PERSON_SCHEMA, "person", True)


def ok_text(fmt: ResponseFormat, text: str) -> str:
    """The json_text of an answer that must pass."""
    result = check_answer(fmt, text)
    assert result.ok, result.problem
    assert result.problem == ""
    return result.json_text


def problem(fmt: ResponseFormat, text: str) -> str:
    """The problem of an answer that must fail."""
    result = check_answer(fmt, text)
    assert not result.ok
    assert result.json_text == ""
    return result.problem


# --- extraction ---

def test_bare_json_is_returned_as_written():
    assert ok_text(OBJECT, '  {"b": 1, "a": [true, null]}\n') == '{"b": 1, "a": [true, null]}'


@pytest.mark.parametrize("fence", ["```json", "```JSON", "```"])
def test_fenced_json(fence):
    assert ok_text(OBJECT, f'{fence}\n{{"a": 1}}\n```') == '{"a": 1}'


def test_fenced_scalar_and_array():
    word = ResponseFormat("json_schema", {"type": "string"}, "w")
    assert ok_text(word, '```json\n"hello"\n```') == '"hello"'
    assert problem(OBJECT, "```json\n[1, 2]\n```") == "the answer is an array, not a JSON object"


def test_chatter_before_and_after():
    text = 'Here is the JSON:\n\n```json\n{"name": "Ann", "age": 3}\n```\n\nLet me know if you need more!'
    assert ok_text(PERSON, text) == '{"name": "Ann", "age": 3}'


def test_chatter_without_fences():
    assert ok_text(OBJECT, 'Sure! {"a": {"b": [1, 2]}} Hope that helps.') == '{"a": {"b": [1, 2]}}'


def test_braces_and_quotes_inside_strings_do_not_end_the_value():
    value = '{"a": "}{ ] [", "b": "say \\"}\\" now", "c": "back\\\\", "d": 1}'
    assert ok_text(OBJECT, f"Result: {value} -- done }}") == value


def test_prose_in_braces_before_the_json_is_skipped():
    assert ok_text(OBJECT, 'I filled in {name} and {age}: {"name": "x"}') == '{"name": "x"}'


def test_an_unclosed_bracket_in_prose_does_not_hide_the_value():
    assert ok_text(OBJECT, 'Options [a, b, or c: {"choice": "b"}') == '{"choice": "b"}'


def test_first_complete_value_wins():
    assert ok_text(OBJECT, 'First {"n": 1} then {"n": 2}') == '{"n": 1}'


def test_arrays_and_scalars_are_values_for_a_schema():
    numbers = ResponseFormat("json_schema", {"type": "array", "items": {"type": "integer"}}, "n")
    assert ok_text(numbers, "The list:\n[1, 2, 3]\nThat's all.") == "[1, 2, 3]"
    word = ResponseFormat("json_schema", {"type": "string"}, "w")
    assert ok_text(word, ' "hello" ') == '"hello"'


def test_json_object_given_an_array():
    assert problem(OBJECT, "[1, 2]") == "the answer is an array, not a JSON object"
    assert problem(OBJECT, 'Here: [{"a": 1}]') == "the answer is an array, not a JSON object"
    assert problem(OBJECT, '"{\\"a\\": 1}"') == "the answer is a string, not a JSON object"


def test_json_object_prefers_an_object_after_an_array_in_chatter():
    assert ok_text(OBJECT, 'Steps [1] and [2] give {"a": 1}') == '{"a": 1}'


def test_no_json_at_all():
    assert problem(OBJECT, "I cannot help with that.") == structured.NO_JSON
    assert problem(OBJECT, "") == structured.NO_JSON
    assert problem(PERSON, "Name: Ann, age 3") == structured.NO_JSON


def test_invalid_json_names_the_decode_error():
    assert problem(OBJECT, '{"a": 1,}').startswith("the answer is not valid JSON: ")
    assert "end of data" in problem(OBJECT, '{"a": [1, 2')
    assert problem(OBJECT, "{'a': 1}").startswith("the answer is not valid JSON: ")


def test_plain_text_format_is_refused():
    with pytest.raises(ValueError, match="text"):
        check_answer(ResponseFormat(), "{}")
    with pytest.raises(ValueError, match="text"):
        reask_prompt(ResponseFormat(), "x")


@pytest.mark.parametrize("text", ["{" * 20000, "{ " * 10000 + '{"a": 1}', '{"{' * 5000, "[1," * 3000 + "x"])
def test_pathological_text_ends_with_a_verdict(text):
    # Bounded work: the call returns (ok or a problem) instead of scanning quadratically.
    result = check_answer(OBJECT, text)
    assert result.ok == text.endswith('{"a": 1}')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12)
prose = st.text(alphabet=st.characters(blacklist_characters="{}[]\"`\\"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(value=st.dictionaries(st.text(max_size=6), json_values, max_size=4), before=prose, after=prose,
       fenced=st.booleans(), indent=st.booleans())
def test_any_object_survives_chatter_and_fences(value, before, after, fenced, indent):
    body = orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0).decode()
    inner = f"```json\n{body}\n```" if fenced else body
    text = f"{before}\n{inner}\n{after}"
    extracted = ok_text(OBJECT, text)
    assert orjson.loads(extracted) == value
    assert extracted == body


# --- schemas ---

def test_valid_answer_against_a_schema():
    text = '{"name": "Ann", "age": 3, "pets": [{"kind": "cat"}]}'
    assert ok_text(PERSON, text) == text


def test_schema_failure_names_the_path_and_reason():
    assert problem(PERSON, '{"name": "Ann", "age": "x"}') == "at $.age: 'x' is not of type 'integer'"
    assert problem(PERSON, '{"name": "Ann"}') == "at $: 'age' is a required property"
    assert problem(PERSON, '{"name": "A", "age": 1, "pets": [{"kind": "cow"}]}') == \
        "at $.pets[0].kind: 'cow' is not one of ['cat', 'dog']"


def test_extra_property_is_reported_when_the_schema_forbids_it():
    assert "'extra' was unexpected" in problem(PERSON, '{"name": "A", "age": 1, "extra": 0}')


def test_a_long_problem_is_clipped():
    text = orjson.dumps({"name": "A", "age": "y" * 2000}).decode()
    message = problem(PERSON, text)
    assert message.startswith("at $.age: 'yyy")
    assert len(message) <= structured.PROBLEM_LIMIT


def test_formats_are_not_checked():
    dated = ResponseFormat("json_schema", {"type": "string", "format": "date"}, "d")
    assert ok_text(dated, '"not a date"') == '"not a date"'


def test_schema_dialect_follows_dollar_schema():
    # Draft 4 reads exclusiveMaximum as a boolean beside maximum; 2020-12 as a number.
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer",
              "maximum": 5, "exclusiveMaximum": True}
    assert problem(ResponseFormat("json_schema", draft4, "n"), "5").startswith("at $: 5 ")
    assert ok_text(ResponseFormat("json_schema", {"type": "integer", "exclusiveMaximum": 6}, "n"), "5") == "5"


def test_validators_are_cached_by_content_whatever_the_key_order():
    structured._compiled.cache_clear()
    first = {"type": "object", "required": ["a"]}
    second = {"required": ["a"], "type": "object"}
    assert problem(ResponseFormat("json_schema", first, "x"), "{}") == "at $: 'a' is a required property"
    assert problem(ResponseFormat("json_schema", second, "x"), "{}") == "at $: 'a' is a required property"
    info = structured._compiled.cache_info()
    assert (info.hits, info.misses, info.maxsize) == (1, 1, 128)


def test_an_unusable_schema_fails_the_answer_instead_of_raising():
    bad = ResponseFormat("json_schema", {"type": 5}, "x")
    assert problem(bad, "{}").startswith("the schema is not usable: at $.type: ")


def test_remote_refs_are_never_fetched(monkeypatch):
    fetched = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: fetched.append(a) or None)
    remote = {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}
    assert "cannot resolve $ref 'https://example.com/a.json'" in schema_problem(remote)
    assert problem(ResponseFormat("json_schema", remote, "x"), '{"a": 1}').startswith(
        "the schema is not usable: at $.properties.a.$ref: cannot resolve")
    assert fetched == []


# --- schema_problem ---

@pytest.mark.parametrize("schema, expected", [
    ({"type": 5}, "at $.type: 5 is not valid under any of the given schemas"),
    ({"type": "strin"}, "at $.type: 'strin' is not valid under any of the given schemas"),
    ({"properties": {"a": {"minimum": "3"}}}, "at $.properties.a.minimum: '3' is not of type 'number'"),
    ({"required": "a"}, "at $.required: 'a' is not of type 'array'"),
    ({"pattern": "("}, "at $.pattern: '(' is not a 'regex'"),
    ({"$schema": "https://example.com/meta"}, "at $.$schema: unknown meta-schema 'https://example.com/meta'"),
    ({"$schema": 7}, "at $.$schema: must be a string, not a number"),
    ({"$ref": "#/$defs/Missing"},
     "at $.$ref: cannot resolve $ref '#/$defs/Missing' (only references inside the schema work)"),
    ({"properties": {"enum": {"$ref": "#/$defs/Gone"}}},
     "at $.properties.enum.$ref: cannot resolve $ref '#/$defs/Gone'"
     " (only references inside the schema work)"),
    ([], "the schema must be a JSON object, not an array"),
    ("object", "the schema must be a JSON object, not a string"),
    (None, "the schema must be a JSON object, not null"),
])
def test_schema_problem_names_what_is_wrong(schema, expected):
    assert schema_problem(schema) == expected


@pytest.mark.parametrize("schema", [
    PERSON_SCHEMA,
    {},
    {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"a": {"type": "string"}},
     "properties": {"x": {"$ref": "#/definitions/a"}}},
    {"type": "object", "properties": {"$ref": {"type": "string"}}, "default": {"$ref": "not a ref"}},
    {"$ref": "#"},
])
def test_schema_problem_accepts_usable_schemas(schema):
    assert schema_problem(schema) is None


def test_schema_problem_on_a_deep_schema_is_a_message():
    deep: dict = {}
    node = deep
    for _ in range(3000):
        node["not"] = {}
        node = node["not"]
    assert schema_problem(deep) == "the schema is nested too deeply"


# --- prompts ---

def test_reask_names_the_problem_and_repeats_the_schema():
    message = reask_prompt(PERSON, "at $.age: 'x' is not of type 'integer'")
    assert "at $.age: 'x' is not of type 'integer'" in message
    assert orjson.dumps(PERSON_SCHEMA).decode() in message
    assert "only the corrected JSON value" in message


def test_reask_for_json_object_asks_for_an_object_without_a_schema():
    message = reask_prompt(OBJECT, structured.NO_JSON)
    assert structured.NO_JSON in message
    assert "only the corrected JSON object" in message
    assert "schema" not in message


def test_a_pydantic_models_schema_works_end_to_end():
    # What openai's parse(response_format=Model) sends: pydantic's schema, nested models as $defs/$ref.
    pydantic = pytest.importorskip("pydantic")

    class Step(pydantic.BaseModel):
        explanation: str
        output: str

    class Solution(pydantic.BaseModel):
        steps: list[Step]
        final_answer: str

    schema = Solution.model_json_schema()
    assert schema_problem(schema) is None
    fmt = ResponseFormat("json_schema", schema, "Solution", True)
    good = '{"steps": [{"explanation": "add", "output": "2"}], "final_answer": "2"}'
    assert Solution.model_validate_json(ok_text(fmt, f"```json\n{good}\n```")).final_answer == "2"
    assert problem(fmt, '{"steps": [{"explanation": "add"}], "final_answer": "2"}') == \
        "at $.steps[0]: 'output' is a required property"
