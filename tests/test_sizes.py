import math

import numpy as np
import pytest

from olla_jax.sizes import parse_size, size_text


def test_size_text_keeps_small_figures_readable():
    assert size_text(0) == "0.00 MiB"
    assert size_text(512) == "512 B"
    assert size_text(3 * 1024) == "3.0 KiB"
    assert size_text(3 * 2**20 // 2) == "1.50 MiB"
    assert size_text(-2 * 2**20) == "-2.00 MiB"
    assert size_text(2048 * 2**20) == "2,048.00 MiB"


# --- sizes read from the user: one parser for the Python API and the CLI ---------


@pytest.mark.parametrize("value, expected", [
    ("123456", 123456), ("200MiB", 200 << 20), ("1.5 GiB", 3 << 29), ("2kb", 2000), ("7B", 7),
    ("2e9", 2 * 10**9), ("1TiB", 2**40), (123456, 123456), (2e9, 2 * 10**9),
    (np.int64(4096), 4096), (2 << 30, 2 << 30)])
def test_parse_size_takes_numbers_and_strings(value, expected):
    assert parse_size(value) == expected and type(parse_size(value)) is int


@pytest.mark.parametrize("value", ["", "0", "-5MiB", "12 parsecs", "MiB", "0.1", "nan", "inf",
                                   True, False, 0, -5, 1.5, math.nan, math.inf, None, [1], b"1"])
def test_parse_size_refuses_what_is_not_a_size(value):
    with pytest.raises(ValueError, match=r"capacity=.*: give a positive size in bytes.*'200MiB'"):
        parse_size(value, "capacity")


def test_the_api_takes_size_strings_as_the_cli_does():
    import olla_jax
    from olla_jax import cli
    placement = olla_jax.place([(0, 2, 600), (1, 3, 600)], capacity="2KiB")
    assert placement.arena_size == 1200
    with pytest.raises(ValueError, match="capacity='lots': give a positive size"):
        olla_jax.place([(0, 2, 600)], capacity="lots")
    assert cli.parse_bytes("16MiB", "capacity") == parse_size("16MiB") == 16 << 20
    with pytest.raises(cli.UsageError, match="--capacity='16 parsecs': give a positive size"):
        cli.parse_bytes("16 parsecs", "capacity")
    jitted = olla_jax.jit(lambda x: x * 2, memory_budget="1GiB")
    assert jitted._options["memory_budget"] == 2**30     # planned as 2**30 would be
    with pytest.raises(ValueError, match="memory_budget='1 GiBs': give a positive size"):
        olla_jax.jit(lambda x: x * 2, memory_budget="1 GiBs")
    # the size is read before the later arguments are checked
    with pytest.raises(ValueError, match="time_limit_s must be positive"):
        olla_jax.largest_batch(lambda b: None, capacity_bytes="64MiB", time_limit_s=-1)
    with pytest.raises(ValueError, match="capacity_bytes=True: give a positive size"):
        olla_jax.largest_batch(lambda b: None, capacity_bytes=True)


@pytest.mark.parametrize("value", [0.75, 0.5, "0.6", ".5", "75%"])
def test_a_share_of_xlas_memory_is_refused_with_how_to_ask_for_one(value):
    """memory_budget=0.75 (meant: 0.75 x XLA's) is refused saying how to give that share."""
    with pytest.raises(ValueError, match=r"not a size: plan once without one and pass e\.g\. "
                                         r"int\(0\.75 \* plan\.xla_total_bytes\)"):
        parse_size(value)


@pytest.mark.parametrize("value", [2.5, "12 parsecs", -0.5, "lots"])
def test_other_refused_sizes_get_no_share_hint(value):
    with pytest.raises(ValueError) as err:
        parse_size(value)
    assert "share" not in str(err.value)
