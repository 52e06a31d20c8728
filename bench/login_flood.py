"""A real support person's login time under a flood of password guesses, and without one.

    .venv/bin/python -m bench.login_flood [--guesses 1000] [--logins 40] [--json]

One relay (`python -m relay serve`, bench.ours.RelayProcess), measured in one run:
  1. baseline: LOGINS password logins of the real support person from 127.0.0.1, one after
     another, each timed from its hello to its welcome;
  2. the same logins while GUESSES guesses at made-up accounts arrive from 127.0.0.2, over
     CONCURRENCY connections at once, as fast as the relay answers them (issue 11: one
     address trying 1,500 made-up accounts made a real login take 16.6 s);
  3. the same again with the guesses spread over SPREAD addresses (127.0.1.x), which only
     the overall limit holds back.
A real login refused with too-many-attempts waits the seconds it is told and tries again;
its time is until the welcome, retries included, as the person would feel it. The real
logins keep going until the flood is over. The flood runs in a process of its own, so its
client work does not slow the measuring one. Prints p50/p99/max per phase and how the
guesses were answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import protocol as p
from bench.measure import percentile
from bench.ours import PASSWORD, TECHNICIAN, RelayProcess

CONCURRENCY = 24  # connections open at once: under the relay's cap per address (32)
SPREAD = 50
_WAIT = re.compile(r"Try again in (\d+) s")


async def attempt(url: str, source: str, user: str, password: str) -> p.Message:
    """One password login from `source`: the relay's first answer."""
    from websockets.asyncio.client import connect

    async with connect(f"{url}/ws/viewer", local_addr=(source, 0), compression=None,
                       open_timeout=30, max_size=p.MAX_CONTROL_BYTES) as ws:
        await ws.send(p.encode_control(
            p.ViewerHello("viewer", p.PROTOCOL_VERSION, user, password, "")))
        return p.decode_control(await asyncio.wait_for(ws.recv(), 60))


async def real_login(url: str) -> tuple[float, int]:
    """Seconds from the first hello to a welcome, and how many refusals came first."""
    started, refused = time.perf_counter(), 0
    while True:
        answer = await attempt(url, "127.0.0.1", TECHNICIAN, PASSWORD)
        if isinstance(answer, p.Welcome):
            return time.perf_counter() - started, refused
        match = _WAIT.search(getattr(answer, "message", ""))
        if match is None:
            raise RuntimeError(f"the real login was refused: {answer}")
        refused += 1
        await asyncio.sleep(int(match.group(1)))


async def flood(url: str, guesses: int, sources: list[str], answers: Counter) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(guesses):
        queue.put_nowait(i)

    async def guesser() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            try:
                answer = await attempt(url, sources[i % len(sources)], f"made-up-{i}",
                                       "guess-password")
                answers[getattr(answer, "code", type(answer).__name__)] += 1
            except (OSError, TimeoutError) as error:
                answers[f"failed: {type(error).__name__}"] += 1

    await asyncio.gather(*(guesser() for _ in range(CONCURRENCY)))


async def flood_process(url: str, guesses: int, sources: list[str]) -> dict:
    """The flood, in a child process (`--flood`): how its guesses were answered."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.login_flood", "--flood", url, "--guesses", str(guesses),
        "--sources", ",".join(sources), stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the flood process failed ({child.returncode})")
    return json.loads(out)


async def phase(url: str, logins: int, guesses: int, sources: list[str]) -> dict:
    flooding = asyncio.create_task(flood_process(url, guesses, sources)) if guesses else None
    started = time.perf_counter()
    times, refusals = [], 0
    while len(times) < logins or (flooding is not None and not flooding.done()):
        took, refused = await real_login(url)
        times.append(took * 1000)
        refusals += refused
    answers = await flooding if flooding is not None else {}
    return {
        "logins": len(times), "p50_ms": round(percentile(times, 50), 1),
        "p99_ms": round(percentile(times, 99), 1), "max_ms": round(max(times), 1),
        "real_login_refusals": refusals, "guesses": guesses, "guess_sources": len(sources),
        "guess_answers": answers, "seconds": round(time.perf_counter() - started, 1),
    }


async def measure(url: str, logins: int, guesses: int) -> dict:
    results = {"baseline": await phase(url, logins, 0, [])}
    results["flood_one_address"] = await phase(url, logins, guesses, ["127.0.0.2"])
    # Let the first flood's address limits and in-flight checks settle before the next one.
    await asyncio.sleep(3)
    spread = [f"127.0.1.{i + 1}" for i in range(SPREAD)]
    results[f"flood_{SPREAD}_addresses"] = await phase(url, logins, guesses, spread)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guesses", type=int, default=1000, help="guesses per flood")
    parser.add_argument("--logins", type=int, default=40,
                        help="real logins per phase, at least (more while a flood lasts)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--flood", metavar="URL", help=argparse.SUPPRESS)  # the child
    parser.add_argument("--sources", default="127.0.0.2", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        answers: Counter = Counter()
        asyncio.run(flood(args.flood, args.guesses, args.sources.split(","), answers))
        print(json.dumps(dict(answers)))
        return
    with tempfile.TemporaryDirectory(prefix="login-flood-") as folder:
        relay = RelayProcess(Path(folder) / "data").start()
        try:
            results = asyncio.run(measure(relay.ws_url, args.logins, args.guesses))
        finally:
            relay.stop()
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'phase':<22} {'logins':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
          f" {'refused':>7}  guesses answered")
    for name, row in results.items():
        answered = ", ".join(f"{k} {v}" for k, v in sorted(row["guess_answers"].items()))
        took = f" in {row['seconds']} s" if answered else ""
        print(f"{name:<22} {row['logins']:>6} {row['p50_ms']:>8} {row['p99_ms']:>8}"
              f" {row['max_ms']:>8} {row['real_login_refusals']:>7}  {answered or '-'}{took}")


if __name__ == "__main__":
    main()
