"""``python -m olla_jax SUBCOMMAND [--flags]``: see ``olla_jax.cli``."""

from olla_jax import cli

if __name__ == "__main__":
    cli.run()
