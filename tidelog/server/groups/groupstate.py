"""A :class:`ConsumerGroup` to its stored :class:`GroupRecord` and back.

What is stored is what a restarted coordinator needs so that no member is ever told an epoch
again with another assignment, and no partition gets a second owner: every member's epochs,
what it holds, what it was last sent and what it is revoking, and the target. Deadlines are
not stored (they are instants of a monotonic clock): a resumed member has a whole session
timeout from the load to heartbeat, and a whole rebalance timeout to give up what it revokes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .group import ConsumerGroup, GroupSettings, Member
from .records import GROUP_VERSION, GroupRecord, MemberRecord, pack, unpack


def group_record(group: ConsumerGroup) -> GroupRecord:
    """The group's state as stored now."""
    return GroupRecord(
        version=GROUP_VERSION,
        group_epoch=group.group_epoch,
        assignor=group.assignor,
        topics=group.seen,
        members=[
            MemberRecord(
                member_id=mb.member_id,
                instance_id=mb.instance_id,
                client_id=mb.client_id,
                client_host=mb.client_host,
                subscribed_topics=list(mb.subscribed_topics),
                subscribed_pattern=mb.subscribed_pattern,
                assignor=mb.assignor,
                session_timeout_ms=mb.session_timeout_ms,
                rebalance_timeout_ms=mb.rebalance_timeout_ms,
                epoch=mb.epoch,
                previous_epoch=mb.previous_epoch,
                held=pack(mb.held),
                revoking=pack(mb.revoking),
                sent=None if mb.sent is None else pack(mb.sent),
                target=pack(group.target.get(mb.member_id, frozenset())),
                departed=mb.departed,
            )
            for mb in group.members.values()
        ],
    )


def resume_group(
    group_id: str,
    record: GroupRecord,
    settings: GroupSettings,
    *,
    now: int,
    topics: Mapping[str, int],
) -> ConsumerGroup:
    """The group ``record`` stored, its members' deadlines starting at ``now``."""
    members = []
    for mr in record.members:
        revoking = unpack(mr.revoking)
        members.append(
            Member(
                member_id=mr.member_id,
                instance_id=mr.instance_id,
                client_id=mr.client_id,
                client_host=mr.client_host,
                subscribed_topics=tuple(mr.subscribed_topics),
                subscribed_pattern=mr.subscribed_pattern,
                pattern=re.compile(mr.subscribed_pattern) if mr.subscribed_pattern else None,
                assignor=mr.assignor,
                session_timeout_ms=mr.session_timeout_ms,
                rebalance_timeout_ms=mr.rebalance_timeout_ms,
                session_deadline=now + mr.session_timeout_ms,
                epoch=mr.epoch,
                previous_epoch=mr.previous_epoch,
                held=unpack(mr.held),
                revoking=revoking,
                sent=None if mr.sent is None else unpack(mr.sent),
                revoke_deadline=now + mr.rebalance_timeout_ms if revoking else None,
                departed=mr.departed,
            )
        )
    return ConsumerGroup.resume(
        group_id,
        settings,
        group_epoch=record.group_epoch,
        assignor=record.assignor,
        seen=record.topics,
        members=members,
        targets={mr.member_id: unpack(mr.target) for mr in record.members},
        topics=topics,
    )
