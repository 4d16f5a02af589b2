"""Who codes the segments: this process, worker processes on this machine, or a Dask cluster.

Every segment is an independent twin (shared/coding/segments.py), so a runner only decides
where each one runs; the file is put together in segment order afterwards and cannot depend
on how many workers there were or which finished first. Three small patterns:

  * `InProcess`: `--jobs 1`, the segments one after another here (today's one-twin path);
  * `LocalPool`: `--jobs N`, N spawned processes, one torch thread each; per-step progress
    comes back over a queue; a worker that dies ends the run with one line;
  * `DaskCluster`: `--cluster tcp://HOST:PORT`, one task per segment on a Dask scheduler; the
    scheduler gives a dead worker's segment to another worker; per-step progress comes back as
    worker events on a topic this run subscribes to. Before any work, every worker
    is asked for its arithmetic fingerprint, so a worker without marslink or with another
    arithmetic is named in one line, not met as garbage. docs/cluster.md: how to run one.

Torch-free at import (the CLI pins the numeric profile first); workers pin their own.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_module
import signal
import sys
import time
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from ..core import numeric
from ..core.config import RunConfig, table_bytes
from ..core.errors import LinkFailure, MarslinkError, ProfileError, UsageError
from ..coding.container import check_plan, segment_count

MAX_JOBS = 1024                  # worker processes one run may ask for
WORKER_BASE_BYTES = 320 << 20    # a worker with torch loaded, before its twin (docs/segments.md)
PROGRESS_EVERY_S = 0.2           # how often a worker reports its twin's progress
DASK_PROGRESS_EVERY_S = 1.0      # the same on a Dask worker (each report goes through the scheduler)
POLL_S = 0.1                     # how often the parent looks at results and progress
DASK_CONNECT_S = 10.0            # an unreachable scheduler is reported after this long
DASK_WORKERS_S = 20.0            # a scheduler without workers is reported after this long
DASK_PROBE_S = 120.0             # workers must load marslink (torch) and answer within this
FAULT_KILL_ENV = "MARSLINK_FAULT_KILL_STEP"   # tests: a worker SIGKILLs itself after this step

Progress = Callable[[int, int, float], None]  # (segment, tokens done in it, ideal bits so far)


# -- how many workers -------------------------------------------------------------------------

def worker_memory(config: RunConfig, segment_length: int) -> int:
    """Bytes one worker needs for a twin over a segment of `segment_length` bytes: the process
    with torch, the n-gram tables (sized for the segment, as the twin sizes them), and each
    weight four times (itself, its gradient, Adam's two moments). An estimate, on the high side."""
    import dataclasses                          # start-up: only once a run is planned
    from ..core.ngram import table_bits_for     # start-up: numpy only after the profile is pinned
    m = config.model
    m = dataclasses.replace(m, table_bits=table_bits_for(m.table_bits, segment_length))
    params = 12 * m.n_layer * m.n_embd ** 2 + 2 * 257 * m.n_embd
    return WORKER_BASE_BYTES + table_bytes(m) + 16 * params


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, or None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_jobs(config: RunConfig, segment_length: int, segments: int) -> tuple[int, str | None]:
    """Every core this process may use (no more than there are segments), capped by memory;
    the note says when the cap applied."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    wanted = max(1, min(cores, segments))
    free, need = available_memory(), worker_memory(config, segment_length)
    if free is None or free // need >= wanted:
        return wanted, None
    jobs = max(1, free // need)
    return jobs, (f"{jobs} worker(s), not {wanted}: each needs about {need >> 20:,} MiB "
                  f"and {free >> 20:,} MiB of memory are available")


@contextmanager
def plan_jobs(prog: str, config: RunConfig, length: int, segment_size: int, jobs: int | None,
              cluster: str | None, quiet: bool, threads_asked: bool = False):
    """The runner --jobs / --cluster ask for (default: default_jobs), closed on the way out
    whatever happens, so no worker outlives the command."""
    check_plan(length, segment_size)
    segments = segment_count(length, segment_size)
    profile = numeric.active().name
    if cluster:
        runner = DaskCluster(cluster, profile)
    else:
        if jobs is None:
            jobs, note = default_jobs(config, min(length, segment_size), segments)
            if note and not quiet:
                print(f"{prog}: {note}", file=sys.stderr, flush=True)
        jobs = min(jobs, segments)
        runner = InProcess(profile) if jobs == 1 else LocalPool(jobs, profile)
        threads = numeric.active().threads
        if jobs > 1 and threads != 1 and threads_asked and not quiet:
            print(f"{prog}: --threads {threads} is for one process; the {jobs} worker processes use one thread "
                  f"each", file=sys.stderr, flush=True)
    try:
        yield runner
    finally:
        runner.close()


# -- what a worker runs -------------------------------------------------------------------------

_reports = None                  # in a LocalPool worker: the queue progress goes back on


def _pin(profile: str | None) -> None:
    """The numeric profile, one thread, before torch loads in this worker. A worker that already
    runs another profile keeps it: no profile changes a bit (docs/determinism.md)."""
    try:
        numeric.activate(profile, 1)
    except ProfileError:
        numeric.active()


def _init_pool_worker(reports, profile: str | None, parent: int) -> None:
    global _reports
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent handles Ctrl-C and stops us
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})   # blocked while we started: one pending is dropped
    _die_with_parent(parent)
    _reports = reports
    _pin(profile)


PR_SET_PDEATHSIG = 1             # prctl(2): the signal a process gets when its parent dies


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this worker when the parent dies, even by SIGKILL (which runs no cleanup),
    so no worker outlives the command; a parent already gone means exit now. Elsewhere the
    parent's own cleanup is all there is."""
    try:
        import ctypes                          # start-up: only in a worker
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _on_step(index: int, topic: str | None = None) -> Callable | None:
    """The worker's per-step hook: progress onto the queue (LocalPool) or, on a Dask worker, as
    an event on `topic`; and the test fault."""
    kill = os.environ.get(FAULT_KILL_ENV)
    send, every = (_reports.put, PROGRESS_EVERY_S) if _reports is not None else (None, 0.0)
    if topic is not None:
        from distributed import get_worker      # optional, and only ever on a Dask worker
        worker = get_worker()
        send, every = (lambda event: worker.log_event(topic, event)), DASK_PROGRESS_EVERY_S
    if send is None and not kill:
        return None
    last = [0.0]

    def call(twin, report):
        now = time.monotonic()
        if send is not None and (now - last[0] >= every or twin.finished):
            last[0] = now
            send((int(index), int(report.tokens_done), float(twin.ideal_bits)))
        if kill and report.step == int(kill):
            os.kill(os.getpid(), signal.SIGKILL)
    return call


def encode_task(index: int, data: bytes, config: dict, profile: str | None = None, on_step=None,
                topic: str | None = None):
    """One segment coded, wherever this runs. Returns segments.Coded."""
    _pin(profile)
    from ..coding.segments import encode_segment   # start-up: torch loads after _pin
    return encode_segment(index, data, RunConfig.from_dict(config), on_step or _on_step(index, topic))


def decode_task(index: int, header: dict, segment, digests: list[str], payload: bytes,
                profile: str | None = None, on_step=None, topic: str | None = None):
    """One segment decoded and checked, wherever this runs. Returns segments.Decoded."""
    _pin(profile)
    from ..coding.segments import decode_segment   # start-up: torch loads after _pin
    return decode_segment(index, header, segment, digests, payload, on_step or _on_step(index, topic))


def probe(profile: str | None = None) -> dict:
    """What a Dask worker reports before it gets work: its arithmetic fingerprint."""
    _pin(profile)
    from ..core.fingerprint import fingerprint      # start-up: torch loads after _pin
    return fingerprint()


# -- the runners -------------------------------------------------------------------------------

class InProcess:
    """The segments one after another in this process."""
    where = "this process"

    def __init__(self, profile: str | None = None):
        self.profile = profile

    def run(self, fn, tasks: list[tuple], progress: Progress) -> list:
        out = []
        for task in tasks:
            index = task[0]
            out.append(fn(*task, profile=self.profile,
                          on_step=lambda twin, report, i=index: progress(i, report.tokens_done, twin.ideal_bits)))
            progress(index, -1, out[-1].stats["ideal_bits"])          # -1: the whole segment, done
        return out

    def close(self):
        pass


class LocalPool:
    """N spawned worker processes on this machine, one torch thread each."""

    def __init__(self, jobs: int, profile: str | None = None):
        self.jobs, self.profile = jobs, profile
        self.where = f"{jobs} worker processes"
        context = multiprocessing.get_context("spawn")   # no fork of a process holding torch
        self.reports = context.Queue()
        self.pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_pool_worker,
                                        initargs=(self.reports, profile, os.getpid()))

    def run(self, fn, tasks: list[tuple], progress: Progress) -> list:
        # The workers start while the tasks are handed out, with SIGINT blocked: they keep the
        # block across exec, so a Ctrl-C as they import waits, unseen, until their initializer
        # ignores it (no worker traceback); here it waits until the block is lifted, then stops
        # the run as any Ctrl-C does (the parent stops the workers).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pending = {self.pool.submit(fn, *task, profile=self.profile) for task in tasks}
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        out = []
        while pending:
            done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            self._drain(progress)
            for future in done:
                try:
                    out.append(future.result())
                except BrokenProcessPool:
                    raise MarslinkError("a worker process died (killed, or out of memory?); nothing was "
                                        "written; run again, with fewer --jobs if memory is short") from None
                self._drain(progress)
                progress(out[-1].index, -1, out[-1].stats["ideal_bits"])
        return out

    def _drain(self, progress: Progress) -> None:
        while True:
            try:
                progress(*self.reports.get_nowait())
            except queue_module.Empty:
                return

    def close(self):
        """Stop every worker, finished or not: none may outlive the command."""
        processes = list((self.pool._processes or {}).values())   # no public way to kill them (3.14 adds one)
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            if p.is_alive():
                p.kill()
        for p in processes:
            p.join(5)
        self.reports.close()
        self.reports.join_thread()


class DaskCluster:
    """One task per segment on a Dask scheduler; its workers need marslink installed."""

    def __init__(self, address: str, profile: str | None = None):
        self.address, self.profile = address, profile
        self.where = f"Dask scheduler {address}"
        try:
            from distributed import Client   # optional: the `cluster` extra, loaded only for --cluster
        except ImportError:
            raise UsageError("--cluster needs Dask distributed, which is not installed here; run "
                             "'make setup' (or pip install 'marslink[cluster]')") from None
        for name in ("distributed", "tornado", "asyncio"):   # their warnings are not our one line
            logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            self.client = Client(address, timeout=DASK_CONNECT_S, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise LinkFailure(f"cannot reach the Dask scheduler at {address} within {DASK_CONNECT_S:g} s "
                              f"({_short(e)}); start it with 'dask scheduler' and check the address") from None
        try:
            self._check_workers()
        except BaseException:
            self.close()
            raise

    def _check_workers(self) -> None:
        from ..core.fingerprint import compare, fingerprint   # start-up: torch, as the profile allows
        try:
            self.client.wait_for_workers(1, timeout=DASK_WORKERS_S)
        except (OSError, TimeoutError):
            raise LinkFailure(f"the Dask scheduler at {self.address} has no workers after {DASK_WORKERS_S:g} s; "
                              f"start some with 'dask worker {self.address} --nthreads 1'") from None
        try:
            answers = self.client.run(probe, self.profile, on_error="return", callback_timeout=DASK_PROBE_S)
        except (OSError, TimeoutError) as e:
            raise LinkFailure(f"the Dask workers at {self.address} did not answer within {DASK_PROBE_S:g} s "
                              f"({_short(e)}); check that they run and have marslink installed") from None
        ours = fingerprint()
        for worker, answer in sorted(answers.items()):
            if isinstance(answer, BaseException):
                raise ProfileError(f"Dask worker {worker} cannot run marslink ({_short(answer)}); install this "
                                   f"marslink release on every worker (docs/cluster.md)")
            compare(ours, answer, f"Dask worker {worker}")

    def run(self, fn, tasks: list[tuple], progress: Progress) -> list:
        from distributed import as_completed    # optional, as above
        from distributed.scheduler import KilledWorker
        topic = f"marslink-progress-{os.getpid()}-{time.time_ns()}"      # this run's alone
        events: queue_module.SimpleQueue = queue_module.SimpleQueue()
        self.client.subscribe_topic(topic, lambda event: events.put(event[1]))   # (time, msg)
        futures = [self.client.submit(fn, *task, profile=self.profile, topic=topic, pure=False) for task in tasks]
        try:
            out = []
            done = as_completed(futures, loop=self.client.loop)
            while not done.is_empty():
                batch = done.next_batch(block=False) if done.has_ready() else []
                while not events.empty():                              # per-step progress first
                    progress(*events.get())
                if not batch:
                    time.sleep(POLL_S)
                for future in batch:
                    try:
                        result = future.result()
                    except KilledWorker:
                        raise LinkFailure(f"a segment killed {self._allowed_failures()} Dask workers in turn (out "
                                          f"of memory?); nothing was written") from None
                    except MarslinkError:
                        raise
                    except Exception as e:  # noqa: BLE001 - a worker's failure, told in one line
                        raise ProfileError(f"a Dask worker could not code a segment ({_short(e)}); install this "
                                           f"marslink release on every worker (docs/cluster.md)") from None
                    out.append(result)
                    progress(result.index, -1, result.stats["ideal_bits"])     # -1: the whole segment
            return out
        finally:
            self.client.cancel(futures)
            try:
                self.client.unsubscribe_topic(topic)
            except Exception:  # noqa: BLE001 - a client that lost its scheduler: the topic goes with it
                pass

    def _allowed_failures(self) -> int:
        import dask                              # optional, as above
        return dask.config.get("distributed.scheduler.allowed-failures")

    def close(self):
        self.client.close(timeout=DASK_CONNECT_S)


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or e.__class__.__name__
    return f"{e.__class__.__name__}: {text[:160]}" if e.__class__.__name__ not in text else text[:200]




# -- a whole file -------------------------------------------------------------------------------

class Tally:
    """Progress across segments and workers: bytes coded (each segment's twin reports its own),
    segments finished, ideal bits so far; `update` is cli.progress's callback."""

    def __init__(self, lengths: list[int], update):
        self.lengths, self.update = lengths, update
        self.done = [0] * len(lengths)
        self.bits = [0.0] * len(lengths)
        self.finished: set[int] = set()

    def __call__(self, index: int, tokens: int, bits: float) -> None:
        """tokens: what the segment's twin has coded so far (a segment redone elsewhere starts
        again from 0); -1 when its result is in, after which a late report changes nothing."""
        if index in self.finished:
            return
        if tokens < 0:
            self.finished.add(index)
        self.done[index] = self.lengths[index] if tokens < 0 else min(tokens, self.lengths[index])
        self.bits[index] = bits
        self.update(sum(self.done), sum(self.bits), f"{len(self.finished)}/{len(self.lengths)} segments")


def compress_file(data: bytes, config: RunConfig, segment_size: int, runner, update) -> tuple[bytes, dict]:
    """The container of `data` cut into segments and coded by `runner`; (blob, stats)."""
    from ..coding.segments import assemble, plan, total_stats
    check_plan(len(data), segment_size)
    started = time.perf_counter()
    pieces = plan(len(data), segment_size)
    tasks = [(i, data[o:o + n], config.to_dict()) for i, (o, n) in enumerate(pieces)]
    coded = runner.run(encode_task, tasks, Tally([n for _, n in pieces], update))
    blob = assemble(data, config, segment_size, coded)
    return blob, total_stats([c.stats for c in coded], started, len(blob), **_run_fields(config, runner, segment_size))


def decompress_file(container, runner, update) -> tuple[bytes, dict]:
    """The original of a parsed container, every segment decoded and checked by `runner`."""
    from ..coding.segments import jobs_of, join, total_stats
    started = time.perf_counter()
    header = {k: container.header[k] for k in ("config", "fingerprint", "sync_every")}
    tasks = [(i, header, s, d, p) for i, s, d, p in jobs_of(container)]
    results = runner.run(decode_task, tasks, Tally([s.length for _, _, s, _, _ in tasks], update))
    data = join(container, results)
    config = RunConfig.from_dict(container.header["config"])
    return data, total_stats([r.stats for r in results], started, None,
                             **_run_fields(config, runner, container.header["segment_size"]))


def _run_fields(config: RunConfig, runner, segment_size: int) -> dict:
    profile = numeric.active()
    threads = profile.threads if isinstance(runner, InProcess) else 1 if isinstance(runner, LocalPool) else None
    return {"preset": config.preset, "profile": profile.name, "threads": threads,
            "segment_size": segment_size, "workers": runner.where}
