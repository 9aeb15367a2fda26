"""The round-trip notebook's decisions, here so they are unit tested rather than living in
cells: may it trade (the paper guard's answer and the user's confirmation), and what does
it conclude (state → verdict → exit code).

A click alone never trades. In the UI the confirmation box must be ticked as well; as a
script, ``--yes`` must be given. And neither counts unless the target passed the health
phase with only paper accounts (:attr:`HealthCheck.paper`).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness_lib.config import HarnessConfig
from harness_lib.models import PhaseResult, RunReport, Target, Verdict
from harness_lib.phases import RunContext, health
from harness_lib.safety import is_paper_account, mask_account

__all__ = [
    "HealthCheck",
    "Outcome",
    "TradeGate",
    "check_target",
    "round_trip_outcome",
    "trade_gate",
]


@dataclass(frozen=True)
class HealthCheck:
    """The health phase's verdict on a target, without subscribing or ordering anything.

    ``paper`` is True only when the health phase passed, which includes the paper guard
    (every managed account is a paper account) and the port guard.
    """

    result: PhaseResult
    target: Target

    @property
    def paper(self) -> bool:
        """True when the target passed health and every managed account is paper."""
        return self.result.verdict == Verdict.PASS and all(
            is_paper_account(a) for a in self.target.accounts
        )

    @property
    def accounts(self) -> list[tuple[str, bool]]:
        """(masked account, is paper) for each managed account."""
        return [(mask_account(a), is_paper_account(a)) for a in self.target.accounts]


async def check_target(
    cfg: HarnessConfig, *, host: str, port: int, simulated: bool = False
) -> HealthCheck:
    """Run the health phase (connect, accounts, paper guard, clock, farms) and disconnect.

    Used by the round-trip notebook to decide whether its run button may be enabled.
    """
    ctx = RunContext.create(cfg, host=host, port=port, simulated=simulated)
    ctx.rec.attach(ctx.conn)
    try:
        result = await health(ctx)
    finally:
        await ctx.rec.close()
        ctx.rec.detach(ctx.conn)
        ctx.conn.disconnect()
    return HealthCheck(result=result, target=ctx.target)


@dataclass(frozen=True, slots=True)
class TradeGate:
    """Whether the round trip may be placed on this target, and what it would place."""

    allowed: bool
    """True only when the target passed health with every account paper."""
    plan: str
    """What a confirmed run places, in words (or why nothing)."""

    def wants(self, *, script: bool, yes: bool, clicked: bool, confirmed: bool) -> bool:
        """Whether the user asked for the trade: ``--yes`` as a script; in the UI the run
        button clicked *and* the confirmation ticked. Says nothing about :attr:`allowed`."""
        return yes if script else clicked and confirmed

    def permits(self, *, script: bool, yes: bool, clicked: bool, confirmed: bool) -> bool:
        """True when the trade may be placed now: allowed, and asked for (:meth:`wants`)."""
        return self.allowed and self.wants(
            script=script, yes=yes, clicked=clicked, confirmed=confirmed
        )

    def prompt(self, *, clicked: bool, confirmed: bool) -> str:
        """What the notebook says while no round trip has been placed."""
        if self.allowed and clicked and not confirmed:
            return "Tick the confirmation box, then click **Run**."
        return "No round trip placed yet."


def trade_gate(cfg: HarnessConfig | None, check: HealthCheck | None) -> TradeGate:
    """The gate for ``cfg`` on the checked target: open only when ``check.paper``."""
    if cfg is None or check is None or not check.paper:
        return TradeGate(False, "nothing (the target did not pass the paper guard)")
    return TradeGate(
        True,
        f"BUY then SELL {cfg.quantity} {cfg.contract} on paper account {check.target.account}",
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the round-trip notebook concluded: its verdict and findings (one paragraph)."""

    verdict: Verdict
    findings: str

    @property
    def exit_code(self) -> int:
        """The exit code a script run ends with: 0 pass, 1 fail, 2 stalled, 3 refused,
        4 bad input."""
        return self.verdict.exit_code


def round_trip_outcome(
    cfg: HarnessConfig | None,
    cfg_error: str,
    check: HealthCheck | None,
    report: RunReport | None,
    *,
    script: bool,
    run_findings: str | None = None,
) -> Outcome:
    """The notebook's verdict: the run's when one ran, else why nothing was run.

    * no configuration: BAD_INPUT with ``cfg_error``;
    * the target failed health or is not provably paper: health's verdict (a PASS that is
      still not paper becomes REFUSED);
    * allowed but not confirmed: REFUSED, saying what would have been placed;
    * a run: its verdict, with ``run_findings`` (read back from the store) or its reason.
    """
    if cfg is None:
        return Outcome(Verdict.BAD_INPUT, f"bad input: {cfg_error}")
    gate = trade_gate(cfg, check)
    if check is None or not gate.allowed:
        verdict = check.result.verdict if check is not None else Verdict.BAD_INPUT
        if verdict == Verdict.PASS:
            verdict = Verdict.REFUSED  # passed health, yet not provably paper
        return Outcome(verdict, f"{verdict}: {check.result.reason if check else cfg_error}")
    if report is None:
        how = "pass --yes" if script else "tick the box"
        return Outcome(
            Verdict.REFUSED,
            f"would place: {gate.plan} at {check.target.label}; not confirmed ({how}), "
            "nothing was sent",
        )
    return Outcome(report.verdict, run_findings if run_findings is not None else report.reason)
