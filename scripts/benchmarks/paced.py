"""The load generator of the latency runs, for wa-outbox and for pgqueuer alike: producers in a
process of their own (never the consumer's), each on one connection, each calling its enqueue on
a fixed schedule (a late call is followed at once by the next due one; together they make `rate`
per second, staggered evenly), the start of each call taken on the client's wall clock. The
consumer side stamps the job's start on the same machine's wall clock, so every latency runs from
the same point (before the enqueue call: its round trip and durable commit included) to the same
point (the job handed to the code that does it)."""
import asyncio
import time


async def produce(rate, seconds, enqueuers):
    """Runs one producer per callable in `enqueuers`: `await enqueue(n)` for n = 0, 1, … at
    rate / len(enqueuers) per second each, for `seconds`. Returns {key: wall-clock start}, key
    being what enqueue returned."""
    started = {}
    interval = len(enqueuers) / rate
    begin = time.monotonic()

    async def run(index, enqueue):
        next_at = begin + index * interval / len(enqueuers)
        await asyncio.sleep(max(0, next_at - time.monotonic()))
        n = 0
        while next_at < begin + seconds:
            at = time.time()
            started[await enqueue(n)] = at
            n += 1
            next_at += interval
            await asyncio.sleep(max(0, next_at - time.monotonic()))

    await asyncio.gather(*(run(i, e) for i, e in enumerate(enqueuers)))
    return started
