"""Campaigns: the campaign file and the pure scheduling core.

    spec        parse_campaign(text, source) -> CampaignSpec; CampaignError
    windows     weekly maintenance windows evaluated at an instant
    tallies     the counts the scheduler decides from
    gates       ring gates, region order, halts
    scheduler   decide(campaign, host, tallies, now) -> Assign | Wait | Skip
    lifecycle   silence, report time-outs, halt or complete, resume, revert:
                what the controller's engine and the simulator both apply

No I/O and no clock in any of them: the controller and the simulator pass
``now`` and the data.
"""

from fleetpatch.checkspec import CheckKind
from fleetpatch.orderspec import LivepatchPolicy, RebootPolicy, RestartPolicy

from controller.campaigns.errors import CampaignError
from controller.campaigns.gates import (
    GateStatus,
    HaltKind,
    HaltReason,
    evaluate_halt,
    gate_status,
    ring_done,
    ring_open,
)
from controller.campaigns.quota import Quota
from controller.campaigns.scheduler import (
    Assign,
    Decision,
    HostFacts,
    Skip,
    SkipReason,
    Wait,
    WaitReason,
    decide,
    is_complete,
    is_silent,
    is_targeted,
    is_timed_out,
    targeting_mismatch,
)
from controller.campaigns.spec import (
    HOST_LOCAL,
    AgentUpdateSpec,
    CampaignSpec,
    Gate,
    PackageTarget,
    PatchSpec,
    RegionOrder,
    RingStage,
    RolloutSpec,
    TargetSpec,
    VerifySpec,
    WindowPolicy,
    parse_campaign,
)
from controller.campaigns.tallies import CampaignState, CellTally, Tallies
from controller.campaigns.windows import (
    WeeklyWindow,
    WindowClosed,
    WindowOpen,
    evaluate_windows,
    parse_weekly,
)

__all__ = [
    "HOST_LOCAL",
    "AgentUpdateSpec",
    "Assign",
    "CampaignError",
    "CampaignSpec",
    "CampaignState",
    "CellTally",
    "CheckKind",
    "Decision",
    "Gate",
    "GateStatus",
    "HaltKind",
    "HaltReason",
    "HostFacts",
    "LivepatchPolicy",
    "PackageTarget",
    "PatchSpec",
    "Quota",
    "RebootPolicy",
    "RegionOrder",
    "RestartPolicy",
    "RingStage",
    "RolloutSpec",
    "Skip",
    "SkipReason",
    "Tallies",
    "TargetSpec",
    "VerifySpec",
    "Wait",
    "WaitReason",
    "WeeklyWindow",
    "WindowClosed",
    "WindowOpen",
    "WindowPolicy",
    "decide",
    "evaluate_halt",
    "evaluate_windows",
    "gate_status",
    "is_complete",
    "is_silent",
    "is_targeted",
    "is_timed_out",
    "parse_campaign",
    "parse_weekly",
    "ring_done",
    "ring_open",
    "targeting_mismatch",
]
