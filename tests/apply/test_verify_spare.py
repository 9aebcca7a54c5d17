"""A verification child started ahead of time: taken once, fresh per verification."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from olla_jax.apply import executable, verify


def _raw() -> bytes:
    return executable.serialize_compiled(jax.jit(jnp.sin).lower(jnp.ones(4)).compile())


def test_a_verification_takes_the_spare_and_leaves_a_new_one(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    verify.prepare_child()
    spare = verify._spare[0]
    raw = _raw()
    result = verify.verify_executable(raw, raw, trials=2)
    assert result.ok, result.reason
    assert spare.proc.returncode == 0, "the spare did not run the verification"
    assert verify._spare and verify._spare[0] is not spare, "no new spare for the next one"
    assert verify._spare[0].proc.poll() is None


def test_a_spare_of_another_environment_is_not_taken(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    verify.prepare_child()
    spare = verify._spare[0]
    monkeypatch.setenv("OLLA_JAX_TEST_SPARE", "1")   # the caller's environment changed
    raw = _raw()
    assert verify.verify_executable(raw, raw, trials=2).ok
    assert spare.proc.returncode != 0, "a child of the old environment ran the verification"


def test_an_untaken_spare_leaves_by_itself():
    child = verify._start_child(verify._child_env("cpu"), idle_s=0.2)
    try:
        assert child.proc.wait(timeout=60) == 0
        assert b"no request came" in child.proc.stderr.read()
    finally:
        child.close()


def test_no_spare_on_one_cpu(monkeypatch):
    verify._close_spare()
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    verify.prepare_child()
    assert not verify._spare


def test_a_spare_killed_before_its_request_is_replaced_not_reported(monkeypatch):
    # Linux kills a child with the thread that started it (PR_SET_PDEATHSIG): a spare
    # taken just as that happens must not fail the verification
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    verify.prepare_child()
    spare = verify._spare[0]
    spare.proc.kill()
    spare.proc.wait()
    monkeypatch.setattr(verify, "_suits", lambda child, env: True)   # taken all the same
    raw = _raw()
    result = verify.verify_executable(raw, raw, trials=2)
    assert result.ok, result.reason
