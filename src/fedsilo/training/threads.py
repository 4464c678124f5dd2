"""How many threads torch may use on a client: one for small models, unless told otherwise.

torch starts one intra-op thread per core. For a small network every operator is a few
microseconds of work, and splitting it across threads costs more than it saves; with several
client processes on one machine (a benchmark, a demo, a silo running more than one session)
their threads oversubscribe the cores and every operator waits for a descheduled worker:
measured on a loaded 2-core machine, a 200-row ffnet round took ~100 ms per task with torch's
default of 2 threads and ~10 ms with 1.

``FEDSILO_TORCH_THREADS`` (an integer >= 1) sets the count whatever the model's size; without
it, models under :data:`SMALL_MODEL_PARAMETERS` parameters use one thread and larger ones
keep torch's default.
"""

from __future__ import annotations

import contextlib
import os

import torch

from fedsilo.errors import ConfigError

__all__ = ["SMALL_MODEL_PARAMETERS", "TORCH_THREADS_ENV", "limit_torch_threads"]

#: the environment variable that sets torch's thread count on a client
TORCH_THREADS_ENV = "FEDSILO_TORCH_THREADS"
#: below this many parameters a model trains on one thread by default
SMALL_MODEL_PARAMETERS = 100_000


def limit_torch_threads(n_parameters: int) -> int | None:
    """Set torch's intra-op (and, while still possible, inter-op) thread count.

    Parameters
    ----------
    n_parameters : int
        The model's parameter count; decides the default (see the module docstring).

    Returns
    -------
    int or None
        The thread count set, or None when torch's default was left alone.

    Raises
    ------
    ConfigError
        When ``FEDSILO_TORCH_THREADS`` is set to anything but an integer >= 1.
    """
    value = os.environ.get(TORCH_THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(
                f"{TORCH_THREADS_ENV} must be an integer >= 1 (torch's thread count). "
                f"Got {value!r}."
            )
        threads = int(value)
    elif n_parameters < SMALL_MODEL_PARAMETERS:
        threads = 1
    else:
        return None
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    # torch accepts the inter-op count only before its first parallel work; later it keeps
    # the one it has (it matters less: small models run no inter-op parallelism).
    with contextlib.suppress(RuntimeError):
        if torch.get_num_interop_threads() != threads:
            torch.set_num_interop_threads(threads)
    return threads
