"""The generic registry: lazy built-ins, registration, and messages for unknown names."""

import sys

import pytest

from kfnas.registry import Registry, RegistryError, load_object


def make():
    return Registry("widget", {"lazy_json": "json:dumps", "broken": "kfnas_no_such_module:x"})


def test_lazy_builtins_are_listed_without_import():
    sys.modules.pop("kfnas_no_such_module", None)
    registry = make()
    assert registry.names() == ["broken", "lazy_json"]
    assert "lazy_json" in registry
    assert "kfnas_no_such_module" not in sys.modules


def test_get_imports_a_lazy_builtin_once():
    import json

    registry = make()
    assert registry.get("lazy_json") is json.dumps
    assert registry.get("lazy_json") is json.dumps


def test_register_as_decorator_and_call():
    registry = make()

    @registry.register("mine")
    def mine():
        return 1

    registry.register("other", 42)
    assert registry.get("mine") is mine
    assert registry.get("other") == 42
    assert registry.names() == ["broken", "lazy_json", "mine", "other"]


def test_duplicate_name_is_refused():
    registry = make()
    with pytest.raises(RegistryError, match="widget 'lazy_json' is already registered"):
        registry.register("lazy_json", object())
    registry.register("x", 1)
    with pytest.raises(RegistryError, match="already registered"):
        registry.register("x", 2)
    registry.unregister("x")
    registry.register("x", 3)
    assert registry.get("x") == 3


def test_unknown_name_lists_known_names_and_closest():
    with pytest.raises(RegistryError) as info:
        make().get("lazy_jsn")
    assert str(info.value) == (
        "unknown widget 'lazy_jsn' (did you mean 'lazy_json'?). Known widgets: broken, lazy_json"
    )


def test_broken_builtin_reference_fails_on_get_only():
    with pytest.raises(ModuleNotFoundError, match="kfnas_no_such_module"):
        make().get("broken")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("json", "not a 'package.module:attribute' reference"),
        ("json:nope", "module 'json' has no attribute 'nope'"),
    ],
)
def test_load_object_errors(path, message):
    with pytest.raises(ImportError, match=message):
        load_object(path)


def test_load_object_follows_dotted_attributes():
    assert load_object("os:path.join") is __import__("os").path.join
