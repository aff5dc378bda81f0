"""The server's allocators: Arrow's pool is the system allocator unless the operator chose
one (each case in a fresh interpreter: the choice is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHOSEN = (
    "from importd_server.memory import configure_allocators; configure_allocators(); "
    "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"
)


@pytest.mark.parametrize(
    ("environment", "pool"), [({}, "system"), ({"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}, None)]
)
def test_arrow_allocates_with_the_system_allocator_unless_the_operator_chose(
    environment: dict[str, str], pool: str | None
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    env.update(environment)
    default = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pyarrow as pa; print(pa.default_memory_pool().backend_name)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    chosen = subprocess.run(
        [sys.executable, "-c", CHOSEN], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert chosen == (pool or default)
    if pool is None:
        assert chosen != "system"  # the operator's choice stood
