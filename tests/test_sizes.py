from olla_jax.sizes import size_text


def test_size_text_keeps_small_figures_readable():
    assert size_text(0) == "0.00 MiB"
    assert size_text(512) == "512 B"
    assert size_text(3 * 1024) == "3.0 KiB"
    assert size_text(3 * 2**20 // 2) == "1.50 MiB"
    assert size_text(-2 * 2**20) == "-2.00 MiB"
    assert size_text(2048 * 2**20) == "2,048.00 MiB"
