"""What the payment breaker adds to a checkout, in CPU: the admission and the verdict around
the provider call, against the bare call.

    python bench/breaker.py [--calls 200000] [--rounds 5]

The provider call is a coroutine that answers at once, so what is timed is the wrapper, not
a network. Three cases, each the best of ``--rounds`` runs of ``--calls`` calls on one event
loop:

- bare: ``await create()``, as checkout calls the gateway without a breaker;
- admitted: ``with breaker.admit() as a: await a.call(create)`` on a closed breaker, the
  cost every checkout pays;
- refused: ``breaker.admit()`` on an open breaker, raising ``ProviderPaused`` (the 503's
  decision; the statement that keeps the hold is a database round trip, measured by the
  flash-sale benchmark's checkout path, not here).

Prints microseconds per call. No database, Redis or network: it runs anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from booking.payments.breaker import ProviderBreaker
from booking.payments.gateway import GatewayTimeout, ProviderPaused


async def _answer() -> int:
    return 1


async def _no_answer() -> None:
    raise GatewayTimeout("no answer")


async def _time(calls: int, one: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await one()
    return (time.perf_counter() - started) / calls * 1e6


async def main(calls: int, rounds: int) -> None:
    closed = ProviderBreaker("bench", failures=5, window_s=60, cooldown_s=30, export_metrics=True)
    opened = ProviderBreaker("bench-open", failures=1, window_s=60, cooldown_s=3600, export_metrics=True)
    with opened.admit() as admission, contextlib.suppress(GatewayTimeout):
        await admission.call(_no_answer)

    async def bare() -> object:
        return await _answer()

    async def admitted() -> object:
        with closed.admit() as admission:
            return await admission.call(_answer)

    async def refused() -> object:
        try:
            opened.admit()
        except ProviderPaused as paused:
            return paused
        raise AssertionError("the breaker should be open")

    results = {}
    for name, one in (("bare", bare), ("admitted", admitted), ("refused", refused)):
        results[name] = min([await _time(calls, one) for _ in range(rounds)])
    for name, us in results.items():
        print(f"{name:>9}: {us:6.2f} µs per call")
    print(f"the breaker on a checkout: {results['admitted'] - results['bare']:.2f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
