"""pytest plugin: one test file runs against the paper-gateway simulator or a real paper gateway.

Installed with the package (entry point ``pytest11``). Without options every test that
uses the ``livefire`` fixture gets its own simulator; with
``--livefire-gateway HOST:PORT`` the same fixture points at that gateway::

    async def test_my_engine_trades(livefire):
        ib = await livefire.connect()
        trade = await livefire.place(ib, Stock("AAPL", "SMART", "USD"), "BUY", 1)

Against a gateway the session first applies the guards of ``harness run`` (live default
ports refused unless ``--livefire-allow-live-port``; every managed account must be paper,
or the session exits with code 3 before any test runs), and at the end cancels and
flattens what the session's own orders (orderRef ``harness:pytest-<session id>``) left.
The terminal summary and the JUnit file say, per test, SIMULATOR or GATEWAY.

Markers: ``@pytest.mark.sim(scenario=..., **knobs)`` configures the simulator; a test
with a non-default scenario or knobs, or one that uses ``paper_gateway`` /
``threaded_gateway``, needs the in-process simulator and is skipped against a gateway.
``@pytest.mark.livefire_gateway`` marks a test that needs a real gateway; it is skipped
unless one is given.

``paper_gateway`` is async (it needs pytest-asyncio); ``threaded_gateway`` runs the
simulator on its own thread for synchronous tests and subprocesses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from harness_lib.sim import PaperGateway, ThreadedGateway, parse_scenario
from harness_lib.sim.scenarios import Scenario
from harness_lib.store import HARNESS_REF_PREFIX

from .options import (
    GATEWAY_FLAG,
    SIM_FIXTURES,
    PluginOptions,
    add_options,
    read_options,
    target_label,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from harness_lib.drill.run import DrillOutcome

    from .gateway import CleanupReport, GatewayTarget, Ledger, Livefire
    from .stack import StackUnderTest

TARGET_PROPERTY = "livefire_target"
"""JUnit property (per testcase and per suite) naming what the test ran against."""
ORDER_REF_PROPERTY = "livefire_order_ref"
SESSION_SIM_LABEL = "SIMULATOR (one in-process simulator per test)"


@dataclass
class _State:
    """Per-session plugin state, kept in ``config.stash``."""

    options: PluginOptions
    target: GatewayTarget | None = None
    labels: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    cleanup: CleanupReport | None = None
    suite_recorded: bool = False
    _order_ref: str | None = None
    _ledger: Ledger | None = None

    @property
    def order_ref(self) -> str:
        """``harness:pytest-<session id>``: what the session's orders carry and all that
        its cleanup touches. Made on first use, like the run ids of ``harness run``."""
        if self._order_ref is None:
            from harness_lib.phases.base import new_run_id

            self._order_ref = f"{HARNESS_REF_PREFIX}pytest-{new_run_id()}"
        return self._order_ref

    @property
    def ledger(self) -> Ledger:
        """The orders placed against the gateway this session."""
        if self._ledger is None:
            from .gateway import Ledger

            self._ledger = Ledger(self.order_ref)
        return self._ledger

    @property
    def session_label(self) -> str:
        """What the session as a whole ran against."""
        return self.target.label if self.target is not None else SESSION_SIM_LABEL


_STATE = pytest.StashKey[_State]()


def _state(config: pytest.Config) -> _State:
    return config.stash[_STATE]


# --- hooks ------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--livefire-*`` options (see :mod:`harness_lib.pytest_plugin.options`)."""
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers and validate the options (bad values: a one-line usage error)."""
    config.addinivalue_line(
        "markers", "sim(scenario=..., **params): configure the simulator of this test"
    )
    config.addinivalue_line(
        "markers",
        "livefire_gateway: needs a real paper gateway; skipped unless "
        f"{GATEWAY_FLAG} HOST:PORT is given",
    )
    config.stash[_STATE] = _State(read_options(config))
    config.pluginmanager.register(_Outcomes(config.stash[_STATE]), "livefire-outcomes")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Against a gateway: the port and paper-account guards, before any test runs."""
    state = _state(session.config)
    opts = state.options
    if opts.gateway is None:
        return
    from .gateway import SessionRefused, probe_gateway, run_in_thread

    try:
        state.target = run_in_thread(probe_gateway(opts), opts.connect_timeout * 3)
    except SessionRefused as exc:
        pytest.exit(str(exc), returncode=exc.returncode)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the gateway up front, so nobody reads a gateway run as a simulator run."""
    state = _state(config)
    if state.target is None:
        return []
    lines = [f"livefire: {state.target.label}; orders tagged {state.order_ref}"]
    if state.target.port_warning:
        lines.append(f"livefire: {state.target.port_warning}")
    return lines


def _sim_marker_kwargs(node: pytest.Item | pytest.Collector) -> dict[str, Any]:
    """The simulator's keyword arguments from the closest ``@pytest.mark.sim``."""
    marker = node.get_closest_marker("sim")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    if marker and marker.args:
        kwargs.setdefault("scenario", marker.args[0])
    return kwargs


def _needs_simulator(item: pytest.Item) -> str | None:
    """Why ``item`` can only run against the in-process simulator, or None."""
    used = [f for f in SIM_FIXTURES if f in getattr(item, "fixturenames", ())]
    if used:
        return f"uses the {used[0]} fixture"
    kwargs = _sim_marker_kwargs(item)
    scenario = kwargs.pop("scenario", Scenario.HEALTHY)
    try:
        default = parse_scenario(str(scenario)) == Scenario.HEALTHY
    except ValueError:
        default = False
    if not default:
        return f"needs the simulator scenario {scenario!r}"
    if kwargs:
        return f"needs simulator knobs {sorted(kwargs)}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip gateway-only tests without a gateway, and simulator-only tests against one."""
    state = _state(config)
    for item in items:
        if state.target is None:
            if item.get_closest_marker("livefire_gateway") is not None:
                item.add_marker(pytest.mark.skip(
                    reason=f"needs a real paper gateway: run with {GATEWAY_FLAG} HOST:PORT"
                ))  # fmt: skip
            continue
        why = _needs_simulator(item)
        if why is not None:
            item.add_marker(pytest.mark.skip(
                reason=f"{why}: runs only against the in-process simulator, not against "
                f"{state.target.label}"
            ))  # fmt: skip


class _Outcomes:
    """Records each labelled test's label and outcome from its reports (a failure in any
    phase wins over a pass). Reports carry the label as a user property, so this also works
    where tests run in other processes (pytest-xdist), whose reports reach this one."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Take the label and the outcome of one test phase's report."""
        state = self.state
        label = dict(report.user_properties).get(TARGET_PROPERTY)
        if label is not None:
            state.labels.setdefault(report.nodeid, str(label))
        if report.nodeid not in state.labels:
            return
        previous = state.outcomes.get(report.nodeid)
        if report.failed:
            state.outcomes[report.nodeid] = "FAILED" if report.when == "call" else "ERROR"
        elif report.when == "call" and previous is None:
            state.outcomes[report.nodeid] = "SKIPPED" if report.skipped else "PASSED"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Against a gateway: cancel and flatten what the session's orders left (always, also
    after a test crashed mid-trade). A cleanup that could not finish fails the session."""
    state = _state(session.config)
    if state.target is None or state._ledger is None:
        return
    from .gateway import run_in_thread, session_cleanup

    opts = state.options
    budget = opts.connect_timeout * 4 + opts.fill_deadline * 3
    try:
        state.cleanup = run_in_thread(session_cleanup(state.target, state.ledger, opts), budget)
    except Exception as exc:  # the summary must say it, whatever went wrong
        from .gateway import CleanupReport

        state.cleanup = CleanupReport(placed=len(state.ledger.trades), problems=[
            f"{type(exc).__name__}: {exc}; run `harness cleanup --host "
            f"{state.target.host} --port {state.target.port}`"
        ])  # fmt: skip
    if not state.cleanup.clean and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """For each test that used a livefire fixture: its outcome and SIMULATOR or GATEWAY
    host:port (masked account); then what the session-end cleanup did."""
    state = _state(terminalreporter.config)
    if not state.labels and state.cleanup is None:
        return
    terminalreporter.section("livefire targets")
    for nodeid, label in state.labels.items():
        outcome = state.outcomes.get(nodeid, "?")
        terminalreporter.write_line(f"{outcome:<7} {nodeid} -> {label}")
    kinds = [label.split(" ", 1)[0] for label in state.labels.values()]
    terminalreporter.write_line(
        f"livefire: {kinds.count('SIMULATOR')} test(s) against SIMULATOR, "
        f"{kinds.count('GATEWAY')} against GATEWAY"
    )
    if state.cleanup is not None:
        for line in state.cleanup.lines(state.order_ref):
            terminalreporter.write_line(line)


# --- labels -----------------------------------------------------------------------------------


def _label(request: pytest.FixtureRequest, label: str) -> None:
    """Say what this test ran against: in the summary, per JUnit testcase (a user property,
    written for every junit_family) and once per JUnit suite."""
    state = _state(request.config)
    request.node.user_properties.append((TARGET_PROPERTY, label))
    if not state.suite_recorded:
        state.suite_recorded = True
        record = request.getfixturevalue("record_testsuite_property")
        record(TARGET_PROPERTY, state.session_label)
        if state.target is not None:
            record(ORDER_REF_PROPERTY, state.order_ref)


def _sim_label(gw: PaperGateway) -> str:
    return target_label(simulated=True, host=gw.host, port=gw.port,
                        account=gw.accounts[0] if gw.accounts else None,
                        scenario=str(gw.scenario))  # fmt: skip


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def threaded_gateway(request: pytest.FixtureRequest) -> Iterator[ThreadedGateway]:
    """A simulator on its own thread and loop, stopped after the test."""
    gw = ThreadedGateway(**_sim_marker_kwargs(request.node)).start()
    try:
        assert gw.gw is not None
        _label(request, _sim_label(gw.gw))
        yield gw
    finally:
        gw.stop()


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - only users without pytest-asyncio get here
    pytest_asyncio = None

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def paper_gateway(request: pytest.FixtureRequest) -> AsyncIterator[PaperGateway]:
        """A simulator on the test's own event loop, stopped after the test."""
        async with PaperGateway(**_sim_marker_kwargs(request.node)) as gw:
            _label(request, _sim_label(gw))
            yield gw

    @pytest_asyncio.fixture
    async def livefire(request: pytest.FixtureRequest) -> AsyncIterator[Livefire]:
        """This test's target: a simulator started for it (``@pytest.mark.sim`` applies), or
        the ``--livefire-gateway``. Yields a :class:`~harness_lib.pytest_plugin.gateway.Livefire`
        with ``connect()`` and ``place()``; its connections close when the test ends."""
        from .gateway import Ledger, Livefire

        state = _state(request.config)
        opts = state.options
        common: dict[str, Any] = {
            "order_ref": state.order_ref,
            "client_id": opts.client_id,
            "max_quantity": opts.max_quantity,
            "connect_timeout": opts.connect_timeout,
        }
        if state.target is not None:
            t = state.target
            lf = Livefire(host=t.host, port=t.port, simulated=t.simulated, account=t.account,
                          ledger=state.ledger, **common)  # fmt: skip
            _label(request, lf.label)
            try:
                yield lf
            finally:
                lf.close()
            return
        async with PaperGateway(**_sim_marker_kwargs(request.node)) as gw:
            # --livefire-account names a gateway's account; the simulator has its own.
            account = gw.accounts[0] if gw.accounts else None
            lf = Livefire(host=gw.host, port=gw.port, simulated=True, account=account,
                          scenario=str(gw.scenario), sim=gw, ledger=Ledger(state.order_ref),
                          **common)  # fmt: skip
            _label(request, lf.label)
            try:
                yield lf
            finally:
                lf.close()

    @pytest_asyncio.fixture
    async def livefire_stack(livefire: Livefire) -> AsyncIterator[StackUnderTest]:
        """The user's stack in this test: ``spawn`` its command, ``watch`` its declared
        endpoints, ``shows_position(qty, within=s)``. Stopped when the test ends."""
        from .stack import StackUnderTest

        stack = StackUnderTest(livefire.host, livefire.port)
        try:
            yield stack
        finally:
            await stack.close()

    @pytest_asyncio.fixture
    async def livefire_drill(
        livefire: Livefire, livefire_stack: StackUnderTest
    ) -> AsyncIterator[Callable[..., Awaitable[DrillOutcome]]]:
        """``await livefire_drill("disconnect", reconnected=5)``: run one drill (deadline
        overrides as keywords) against the stack ``livefire_stack`` watches, through the
        control channel of this test's simulator. Simulator only: skipped against a gateway."""
        from harness_lib.drill.catalog import apply_deadlines, select
        from harness_lib.drill.run import ControlClient, DrillSession
        from harness_lib.sim.control import ControlServer

        if livefire.sim is None:
            pytest.skip(
                "drills need the in-process simulator's control channel; this session "
                f"points at {livefire.label} ({GATEWAY_FLAG})"
            )
        ctl = await ControlServer(livefire.sim).start()

        async def run(name: str, **deadlines: float) -> DrillOutcome:
            if not livefire_stack.endpoints:
                raise AssertionError("call livefire_stack.watch(...) before a drill")
            (drill,) = select([name])
            drill = apply_deadlines(drill, {drill.name: deadlines})
            client = ControlClient(ctl.url)
            session = DrillSession(client, livefire_stack.endpoints, livefire_stack.symbol)
            try:
                await session.start()
                return await session.run(drill)
            finally:
                await session.stop()
                await client.close()

        try:
            yield run
        finally:
            await ctl.stop()
