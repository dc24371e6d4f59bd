"""The Ray executor: one Ray task per batch group of a sweep (``--executor ray``).

``weightlab sweep RECIPE --grid ... --executor ray [--address HOST:PORT|auto|local]
[--cpus-per-task N] [--max-retries N]`` (also ``weightlab reproduce``).

- **Address** (:func:`check_ray`, before anything is written): the ``ray`` package must be
  importable. ``auto`` (the default) reads ``RAY_ADDRESS``, then Ray's current-cluster file
  (``$RAY_TMPDIR``, else ``$TMPDIR``, else ``/tmp``, then ``ray/ray_current_cluster``:
  what ``ray start`` writes); never a bare ``ray.init()``, which joins whatever that file
  names. ``local`` starts a private cluster in this process. ``HOST:PORT`` is first
  checked by a TCP connect (3 s timeout: Ray 2.60's own connect to a closed port had not
  returned after 10 min), then by one call to the cluster's GCS, which a cluster with
  token authentication refuses at once (``ray.init`` retries for 20 s and only says it
  could not connect). A loopback address sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
  (unless set) before Ray is imported: otherwise Ray 2.60 dials the machine's network
  address instead, where a head started with that setting does not listen.
- **Nodes** (:func:`check_nodes`): one probe task per alive node (node affinity) reads a
  marker file the driver wrote into ``--out`` (made absolute) and reports its weightlab
  version; a node that cannot see it, runs another version or cannot import weightlab is
  a one-line error naming the node.
- **Tasks** (:func:`run_plan_ray`): one task per unfinished batch group, ``num_cpus`` =
  ``--cpus-per-task`` (torch's threads in the task too), ``num_gpus=1`` when the runs'
  device is ``cuda``, ``max_retries`` = ``--max-retries`` (Ray's own: a task whose worker
  died is retried and resumes from the finished units) and ``retry_exceptions=False`` (an
  exception is not retried: it marks the group's runs failed). A task plans its group's
  runs from the sweep spec, checks their run directory names against the driver's, and
  runs :func:`weightlab.sweep.local.run_group`; it writes run directories and returns
  status records. The driver alone writes the catalog (at submission and as results
  arrive through ``ray.wait``) and prints one line per finished run.

The driver shuts down only a connection it made (``ray.shutdown()``); never ``ray stop``,
which ends every Ray process on the machine.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightlab.errors import ConfigError, RunFileError, WeightlabError

CONNECT_TIMEOUT_S = 3.0  # the TCP check of HOST:PORT
GCS_TIMEOUT_S = 15.0  # the GCS answering the authentication check
PROBE_TIMEOUT_S = 120.0  # every node answering its probe (worker start included)
DEFAULT_CPUS_PER_TASK = 1
DEFAULT_MAX_RETRIES = 3
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_ENV = "RAY_AUTH_MODE"
MISSING_RAY = "--executor ray needs the ray package: pip install 'weightlab[ray]'"
NO_CLUSTER = (
    "no Ray cluster found (auto): set RAY_ADDRESS or pass --address HOST:PORT or --address local"
)


@dataclass
class RayContext:
    """Where a sweep's tasks run, as :func:`check_ray` resolved it."""

    address: str  # "local" or HOST:PORT
    source: str  # how it was found: --address, RAY_ADDRESS, the current-cluster file, local
    cpus_per_task: int = DEFAULT_CPUS_PER_TASK
    max_retries: int = DEFAULT_MAX_RETRIES
    keep_open: bool = False  # run_plan_ray leaves the connection open (several plans)
    started: bool = False  # this process called ray.init (and so shuts it down)
    probed: set[str] = field(default_factory=set)  # roots every node was checked to see

    def close(self) -> None:
        """Shut down the connection (and a private cluster) if this context made it."""
        if self.started:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        self.started = False
        self.probed.clear()


# -- the address ---------------------------------------------------------------------------
def current_cluster_file() -> Path:
    """Ray's current-cluster file, where ``ray start`` writes the head's address (Ray's own
    rule: ``$RAY_TMPDIR``, else ``$TMPDIR`` on Linux, else ``/tmp``)."""
    if "RAY_TMPDIR" in os.environ:
        base = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        base = os.environ["TMPDIR"]
    else:
        base = "/tmp"
    return Path(base) / "ray" / "ray_current_cluster"


def parse_host_port(text: str, source: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as ``(host, port)``, else a one-line error."""
    if "://" in text:
        raise ConfigError(
            f"Ray address {text!r} ({source}) is a URL; give the head's address as HOST:PORT "
            "(Ray Client ray:// addresses are not supported)"
        )
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"Ray address {text!r} ({source}) is not HOST:PORT; pass --address HOST:PORT, "
            "auto or local"
        )
    return host, int(port)


def resolve_address(address: str | None) -> tuple[str, str]:
    """``(address, source)``: ``local``, or ``HOST:PORT`` and where it came from."""
    if address is None or address == "auto":
        env = os.environ.get("RAY_ADDRESS", "").strip()
        if env and env != "auto":
            return (env, "RAY_ADDRESS") if env == "local" else (env, "from RAY_ADDRESS")
        path = current_cluster_file()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        if not text:
            raise ConfigError(NO_CLUSTER)
        return text, f"from {path}"
    if address == "local":
        return "local", "local"
    return address, "--address"


def _tcp_check(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except TimeoutError:
        reason = f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
    except socket.gaierror as e:
        reason = f"unknown host: {e.strerror}"
    except OSError as e:
        reason = (e.strerror or type(e).__name__).lower()
    else:
        return
    raise ConfigError(
        f"Ray cluster {what} is unreachable ({reason}); start its head (ray start --head "
        f"--port {port}), give another --address, or pass --address local"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _gcs_check(address: str, what: str) -> None:
    """One call to the cluster's GCS: a cluster with token authentication refuses a driver
    without its token at once (``ray.init`` would retry for 20 s and say only that it could
    not connect). Ray's C++ warning lines are kept off stderr meanwhile."""
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # another Ray: ray.init's own error remains
        return
    out: dict[str, BaseException | bool] = {}

    def call() -> None:
        try:
            GcsClient(address=address)
            out["ok"] = True
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    saved = _mute_stderr()
    try:
        t = threading.Thread(target=call, daemon=True, name="weightlab-gcs-check")
        t.start()
        t.join(GCS_TIMEOUT_S)
    finally:
        _restore_stderr(saved)
    err = out.get("error")
    if isinstance(err, AuthenticationError):
        raise ConfigError(
            f"Ray cluster {what} refused this driver: it uses token authentication "
            f"({AUTH_ENV}=token) and no matching token was found; provide the cluster's token "
            f"(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) or start the cluster "
            f"with {AUTH_ENV}=disabled"
        )
    if err is not None and not isinstance(err, TypeError):  # TypeError: another signature
        raise ConfigError(
            f"Ray cluster {what} did not answer as a Ray head ({_one_line(err)}); give the "
            "head's GCS port (ray start --head --port PORT)"
        )
    if not out:
        raise ConfigError(
            f"Ray cluster {what}: the port is open but no Ray GCS answered within "
            f"{GCS_TIMEOUT_S:.0f} s; give the head's GCS port (ray start --head --port PORT)"
        )


def _mute_stderr() -> int | None:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        return saved
    except OSError:
        return None


def _restore_stderr(saved: int | None) -> None:
    if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)


def check_ray(executor: dict) -> RayContext:
    """Check the Ray settings of a sweep before anything is written.

    ``executor``: ``{"executor": "ray", "address"?: HOST:PORT|auto|local,
    "cpus_per_task"?: int, "max_retries"?: int}``. Raises a one-line
    :class:`~weightlab.errors.ConfigError` for a missing ``ray`` package, ``auto`` with no
    cluster, an unreachable address (named; within about 5 s), an address that is not a
    Ray head, or a cluster that refuses this driver's authentication. Connecting
    (``ray.init``) is left to :func:`run_plan_ray` (a ``--dry-run`` starts nothing)."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(MISSING_RAY)
    cpus = executor.get("cpus_per_task", DEFAULT_CPUS_PER_TASK)
    retries = executor.get("max_retries", DEFAULT_MAX_RETRIES)
    for key, value, lo in (("cpus-per-task", cpus, 1), ("max-retries", retries, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"--{key} must be an integer >= {lo}, got {value!r}")
    address, source = resolve_address(executor.get("address"))
    ctx = RayContext(address, source, cpus, retries)
    if address == "local":
        # a private cluster listens on loopback only, and needs no token there
        os.environ.setdefault(LOOPBACK_ENV, "0")
        try:
            from ray._private import ray_constants

            loopback = not ray_constants.ENABLE_RAY_CLUSTER
        except (ImportError, AttributeError):  # another Ray: its own defaults
            loopback = False
        if loopback:
            os.environ.setdefault(AUTH_ENV, "disabled")
        return ctx
    host, port = parse_host_port(address, source)
    what = f"at {host}:{port}" + ("" if source == "--address" else f" ({source})")
    _tcp_check(host, port, what)
    if _is_loopback(host):
        os.environ.setdefault(LOOPBACK_ENV, "0")
    import ray  # noqa: F401 - after the loopback setting

    try:
        from ray._private.services import canonicalize_bootstrap_address

        dialed = canonicalize_bootstrap_address(f"{host}:{port}")
    except Exception:  # noqa: BLE001 - another Ray: it dials what it was given
        dialed = f"{host}:{port}"
    if dialed and dialed != f"{host}:{port}":
        dhost, dport = parse_host_port(dialed, "as Ray dials it")
        _tcp_check(
            dhost,
            dport,
            f"{what}, which Ray dials as {dialed} (set {LOOPBACK_ENV}=0 before Python "
            "starts to dial loopback as given)",
        )
    _gcs_check(dialed or address, what)
    return ctx


# -- connecting ------------------------------------------------------------------------------
def _same_address(a: str, b: str) -> bool:
    try:
        (ha, pa), (hb, pb) = parse_host_port(a, ""), parse_host_port(b, "")
        return pa == pb and (ha == hb or socket.gethostbyname(ha) == socket.gethostbyname(hb))
    except (ConfigError, OSError):
        return a == b


def connect(ctx: RayContext) -> None:
    """``ray.init`` for ``ctx`` unless this process is connected already (to the same
    cluster: reused, and left open; to another: an error)."""
    import ray

    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if ctx.started or (ctx.address != "local" and _same_address(current, ctx.address)):
            return
        raise ConfigError(
            f"this process is already connected to the Ray cluster at {current}; pass "
            f"--address {current}"
        )
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if ctx.address == "local":
        ray.init(
            address="local",
            num_cpus=len(os.sched_getaffinity(0)),
            include_dashboard=False,
            **quiet,
        )
    else:
        try:
            ray.init(address=ctx.address, **quiet)
        except ConnectionError as e:
            raise ConfigError(
                f"could not connect to the Ray cluster at {ctx.address} ({_one_line(e)}); "
                f"if it uses token authentication ({AUTH_ENV}=token), provide its token"
            ) from None
    ctx.started = True


# -- probing the nodes -----------------------------------------------------------------------
def _probe(marker: str, token: str) -> dict:
    """On one node: does it see the driver's marker, and which weightlab does it run?"""
    import weightlab

    try:
        sees = Path(marker).read_text(encoding="utf-8") == token
    except (OSError, UnicodeDecodeError):
        sees = False
    return {"host": socket.gethostname(), "version": weightlab.__version__, "sees": sees}


def _node_name(node: dict) -> str:
    return f"{node['NodeID'][:12]} ({node.get('NodeManagerAddress', '?')})"


def check_nodes(ctx: RayContext, root: Path, gpu: bool = False) -> None:
    """One probe task per alive node with ``cpus_per_task`` CPUs (and a GPU if ``gpu``):
    it must see the marker ``ROOT/.weightlab-probe-<uuid>`` the driver writes (a shared
    filesystem) and run this weightlab version; else a one-line error naming the node. No
    such node is an error too (Ray would leave the tasks pending). The marker (and
    ``root``, if this made it) is removed again; done once per root and connection."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import weightlab

    connect(ctx)
    root = Path(os.path.abspath(root))
    if str(root) in ctx.probed:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    usable = [n for n in nodes if n.get("Resources", {}).get("CPU", 0) >= ctx.cpus_per_task]
    if not usable:
        most = max((n.get("Resources", {}).get("CPU", 0) for n in nodes), default=0)
        raise ConfigError(
            f"no alive node of the Ray cluster ({ctx.address}) has {ctx.cpus_per_task} CPU(s) "
            f"for a task (most: {most:g}); lower --cpus-per-task or add nodes"
        )
    if gpu and not any(n.get("Resources", {}).get("GPU", 0) >= 1 for n in usable):
        raise ConfigError(
            f"no alive node of the Ray cluster ({ctx.address}) has a GPU and "
            f"{ctx.cpus_per_task} CPU(s) for a --device cuda task; add a GPU node or use "
            "--device cpu"
        )
    made = not root.exists()
    token = uuid.uuid4().hex
    marker = root / f".weightlab-probe-{token}"
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(token, encoding="utf-8")
    try:
        probe = ray.remote(_probe)
        refs = {
            probe.options(
                num_cpus=0,
                max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
            ).remote(str(marker), token): n
            for n in usable
        }
        _, late = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
        if late:
            raise ConfigError(
                f"Ray node {_node_name(refs[late[0]])} did not answer weightlab's probe within "
                f"{PROBE_TIMEOUT_S:.0f} s; check the node (ray status) or remove it"
            )
        for ref, node in refs.items():
            try:
                got = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise ConfigError(
                    f"Ray node {_node_name(node)} could not run weightlab's probe "
                    f"({_one_line(_cause(e))}); install weightlab {weightlab.__version__} in "
                    "the Python that Ray runs on every node"
                ) from None
            if got["version"] != weightlab.__version__:
                raise ConfigError(
                    f"Ray node {_node_name(node)} runs weightlab {got['version']}, this driver "
                    f"{weightlab.__version__}; install the same version on every node"
                )
            if not got["sees"]:
                raise ConfigError(
                    f"Ray node {_node_name(node)} cannot see --out {root} (the driver's marker "
                    f"{marker.name} is not there); put --out on a filesystem every node shares"
                )
    finally:
        marker.unlink(missing_ok=True)
        if made:
            try:
                root.rmdir()
            except OSError:
                pass
    ctx.probed.add(str(root))


# -- one task per batch group --------------------------------------------------------------
def group_plan(spec_json: dict, root: str, gid: str, indices: list[int], names: list[str]):
    """The plan of one batch group, built in the task from the sweep spec: the group's grid
    points' configs (as :func:`~weightlab.sweep.plan.plan_sweep` makes them) and their run
    directories, which must be the driver's (another weightlab or recipe code on this node
    would name them differently: a :class:`RunFileError`)."""
    from weightlab.recipes.runner import make_config
    from weightlab.runs.rundir import default_run_dir
    from weightlab.sweep.plan import Plan, PlannedRun
    from weightlab.sweep.spec import SweepSpec

    spec = SweepSpec.from_json(spec_json)
    fixed = dict(spec.set)
    if spec.seeds is not None:
        fixed["seeds"] = spec.seeds
    points = spec.points()
    runs = []
    for k, (i, name) in enumerate(zip(indices, names, strict=True)):
        cfg = make_config(spec.recipe, smoke=spec.smoke, **fixed, **points[i])
        path = default_run_dir(Path(root), spec.recipe, cfg)
        if path.name != name:
            raise RunFileError(
                f"node {socket.gethostname()} names grid point {points[i]} {path.name}, the "
                f"driver {name}; install the same weightlab on every node"
            )
        runs.append(PlannedRun(k, name, path, points[i], cfg, gid))
    return Plan(spec, Path(root), runs, [(gid, list(range(len(runs))))])


def run_group_task(
    spec_json: dict, root: str, gid: str, indices: list[int], names: list[str], threads: int
) -> list[dict]:
    """What one Ray task does: torch's threads = the task's CPUs, then
    :func:`~weightlab.sweep.local.run_group` on the group (no catalog: the driver writes
    it). Returns each run's :class:`~weightlab.sweep.local.RunOutcome` as JSON."""
    import torch

    from weightlab.sweep.local import run_group

    torch.set_num_threads(threads)
    plan = group_plan(spec_json, root, gid, indices, names)
    return [o.to_json() for o in run_group(plan, gid)]


GROUP_TASK: Callable[..., list[dict]] = run_group_task  # looked up per sweep (tests swap it)


def _cause(e: BaseException) -> BaseException:
    return getattr(e, "cause", None) or e


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    if isinstance(e, WeightlabError):
        return msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _is_cuda(cfg: Any) -> bool:
    return str(getattr(cfg, "device", "cpu")).startswith("cuda")


def _echo(line: str) -> None:
    print(line, flush=True)


def run_plan_ray(
    plan: Any, recorder: Any, ctx: RayContext, echo: Callable[[str], None] = _echo
) -> list[Any]:
    """Run ``plan``'s unfinished batch groups as Ray tasks; return one
    :class:`~weightlab.sweep.local.RunOutcome` per run, in plan order
    (:func:`run_plans_ray` with one plan)."""
    return run_plans_ray([plan], recorder, ctx, echo)[0]


def run_plans_ray(
    plans: list[Any], recorder: Any, ctx: RayContext, echo: Callable[[str], None] = _echo
) -> list[list[Any]]:
    """Run the unfinished batch groups of every plan in ``plans`` as Ray tasks, all
    submitted before the first result is awaited (``weightlab reproduce`` gives one plan
    per recipe: the cluster runs them side by side, as its CPUs allow); return each plan's
    :class:`~weightlab.sweep.local.RunOutcome` list, in plan order.

    Connects (``ray.init``) unless connected, probes the nodes once (:func:`check_nodes`),
    records each run's start in the catalog when its group's task is submitted, and its
    end, with one printed line (the local executor's format, numbered over all plans), as
    the task's results arrive. A task that raised, or whose worker died more than
    ``max_retries`` times, marks its group's runs failed with the reason. On an
    interruption every pending task is cancelled and its runs marked incomplete. Shuts
    down what it started unless ``ctx.keep_open``."""
    import ray

    from weightlab.sweep.local import RunOutcome, _verdicts, group_done, outcome_line

    n = sum(len(plan.runs) for plan in plans)
    outcomes: list[dict[str, RunOutcome]] = [{} for _ in plans]
    pending: dict[Any, tuple[int, str, list]] = {}
    emitted = 0

    def emit(k: int, o: RunOutcome) -> None:
        nonlocal emitted
        outcomes[k][o.run] = o
        emitted += 1
        echo(outcome_line(emitted, n, o))

    try:
        gpu = any(_is_cuda(r.cfg) for plan in plans for r in plan.runs)
        if plans:
            check_nodes(ctx, plans[0].root, gpu=gpu)
        task = ray.remote(GROUP_TASK)
        for k, plan in enumerate(plans):
            root = os.path.abspath(plan.root)
            spec_json = plan.spec.to_json()
            for gid, idx in plan.groups:
                runs = [plan.runs[i] for i in idx]
                if group_done(plan, gid):
                    for r in runs:
                        recorder.finished_before(r.path)  # logged, if a killed driver never did
                        emit(k, RunOutcome(r.name, "skipped", verdicts=_verdicts(r.path)))
                    continue
                for r in runs:
                    recorder.started(r.path, sweep=plan.spec.id, group=gid)
                options: dict[str, Any] = {
                    "num_cpus": ctx.cpus_per_task,
                    "max_retries": ctx.max_retries,
                    "retry_exceptions": False,
                    "name": f"weightlab-sweep-{plan.spec.id}-{gid}",
                }
                if any(_is_cuda(r.cfg) for r in runs):
                    options["num_gpus"] = 1
                ref = task.options(**options).remote(
                    spec_json, root, gid, list(idx), [r.name for r in runs], ctx.cpus_per_task
                )
                pending[ref] = (k, gid, runs)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                k, gid, runs = pending.pop(ref)
                for r, o in zip(runs, _results(ref, gid, runs, ctx), strict=True):
                    status = "failed" if o.status == "failed" else "done"
                    recorder.finished(r.path, status, error=o.error, wall_s=o.wall_s)
                    emit(k, o)
    except BaseException:
        for ref, (_, _, runs) in pending.items():  # interrupted: stop the tasks, mark the runs
            ray.cancel(ref, force=True)
            for r in runs:
                try:
                    recorder.finished(r.path, "incomplete")
                except Exception:  # noqa: BLE001 - the interruption is what to report
                    pass
        raise
    finally:
        if not ctx.keep_open:
            ctx.close()
    return [[outcomes[k][r.name] for r in plan.runs] for k, plan in enumerate(plans)]


def _results(ref: Any, gid: str, runs: list, ctx: RayContext) -> list:
    """The group's outcomes from its task, or every run failed with the task's reason."""
    import ray

    from weightlab.sweep.local import RunOutcome

    try:
        got = [RunOutcome.from_json(d) for d in ray.get(ref)]
    except ray.exceptions.RayTaskError as e:
        reason = f"the Ray task of group {gid} raised {_one_line(_cause(e))} (not retried)"
        return [RunOutcome(r.name, "failed", reason) for r in runs]
    except ray.exceptions.RayError as e:
        reason = (
            f"the Ray task of group {gid} was lost ({type(e).__name__}) after "
            f"{ctx.max_retries} retr{'y' if ctx.max_retries == 1 else 'ies'}; re-run the "
            "sweep to resume it"
        )
        return [RunOutcome(r.name, "failed", reason) for r in runs]
    if [o.run for o in got] != [r.name for r in runs]:
        reason = f"the Ray task of group {gid} returned other runs: {[o.run for o in got]}"
        return [RunOutcome(r.name, "failed", reason) for r in runs]
    return got
