"""A step sharded over several CPU devices: planned, not fed back (verification
runs one device's executable), said in one line, results jax.jit's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from olla_jax.apply.feed_back import devices_of

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import warnings
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import olla_jax

tx = optax.adam(1e-3)

def step(params, opt_state, x, y):
    def loss(p):
        h = jax.nn.swish(x @ p["w1"] + p["b1"])
        return jnp.mean((h @ p["w2"] - y) ** 2)
    loss_value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss_value

mesh = Mesh(np.array(jax.devices()), ("d",))
rep, dp = NamedSharding(mesh, P()), NamedSharding(mesh, P("d"))

def args():
    k = jax.random.split(jax.random.key(0), 4)
    params = {"w1": jax.random.normal(k[0], (48, 256)), "b1": jnp.zeros(256),
              "w2": jax.random.normal(k[1], (256, 8))}
    return (jax.device_put(params, rep), jax.device_put(tx.init(params), rep),
            jax.device_put(jax.random.normal(k[2], (64, 48)), dp),
            jax.device_put(jax.random.normal(k[3], (64, 8)), dp))

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    planned = olla_jax.plan(step, *args(), donate_argnums=(0, 1), time_limit_s=2)
got = planned.compiled(*args())
expected = jax.jit(step, donate_argnums=(0, 1))(*args())
for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
print("NOTES", planned.source, planned.notes)
for w in caught:
    print("WARNING", str(w.message))
"""


def test_devices_of_reads_the_module_header():
    assert devices_of("HloModule jit_f, is_scheduled=true, num_partitions=2\\n") == 2
    assert devices_of("HloModule m, replica_count=4, num_partitions=2\nENTRY ...") == 8
    assert devices_of("HloModule jit_f, is_scheduled=true\nnum_partitions=2") == 1


def test_a_step_sharded_over_cpu_devices_is_not_fed_back_and_says_so_in_a_line():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Traceback" not in out and "Traceback" not in result.stderr, out
    if "NOTES xla" in out:   # nothing below XLA's plan was found: nothing to feed back
        return
    assert "runs on 2 devices" in out, out
