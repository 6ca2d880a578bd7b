"""User mistakes surface as LtdError with a one-line message that says what is wrong."""
import pytest

from conftest import random_prompt
from ltd.core.errors import LtdError
from ltd.decoding.controller import StaticTree


@pytest.mark.parametrize("field", ["depth", "top_k", "verify"])
@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_static_tree_rejects_bad_sizes(field, value):
    with pytest.raises(LtdError) as error:
        StaticTree(**{field: value})
    message = str(error.value)
    assert "\n" not in message
    assert field in message and repr(value) in message


def test_static_tree_accepts_valid_sizes():
    tree = StaticTree(depth=1, top_k=1, verify=1)
    assert (tree.depth, tree.top_k, tree.verify) == (1, 1, 1)


LONG_PROMPT = random_prompt(40, seed=9)


def assert_prompt_too_long(error: pytest.ExceptionInfo):
    message = str(error.value)
    assert "\n" not in message
    assert "exceeds the context limit" in message and "32" in message and "40" in message


def test_generate_autoregressive_rejects_prompt_over_context_limit(tiny):
    engine, _ = tiny("llama").engine(max_context=32)
    with pytest.raises(LtdError) as error:
        engine.generate_autoregressive(LONG_PROMPT, 5)
    assert_prompt_too_long(error)


def test_generate_rejects_prompt_over_context_limit(tiny):
    target = tiny("llama")
    engine, _ = target.engine(lambda t: target.self_drafter(), max_context=32)
    with pytest.raises(LtdError) as error:
        engine.generate(LONG_PROMPT, StaticTree(2, 2, 4), 5)
    assert_prompt_too_long(error)


def test_generate_without_drafter_raises(tiny):
    engine, _ = tiny("llama").engine()
    with pytest.raises(LtdError, match="drafter"):
        engine.generate(random_prompt(5), StaticTree(), 5)


def test_empty_prompt_raises(tiny):
    engine, _ = tiny("llama").engine()
    with pytest.raises(LtdError, match="empty prompt"):
        engine.generate_autoregressive([], 5)
