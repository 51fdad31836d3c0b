"""The one place that takes row locks for the rating flow, always in the same order.

Lock order (every transaction that locks more than one of these follows it, so two
transactions can never wait on each other in a cycle):

    1. Rater          (one row: the rater acting)
    2. Pair           (ascending id)
    3. Assignment     (ascending id; only for pairs already locked in step 2)

Pair locks are ``FOR NO KEY UPDATE``: inserting a judgment or an assignment checks its
foreign key to the pair with ``FOR KEY SHARE``, which a plain ``FOR UPDATE`` blocks; two
submissions on two pairs then waited on each other (a deadlock seen under a simulated
crowd). Nothing here changes a pair's key, so the weaker lock is enough.

Pair locks taken while *choosing* work use ``SKIP LOCKED`` on PostgreSQL: a pair that
another rater is being given right now is skipped, not waited for. Callers must be inside
``transaction.atomic()``.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.db.models import Q, QuerySet

from .models import Assignment, Pair, Rater


def skip_locked_supported() -> bool:
    return bool(connection.features.has_select_for_update_skip_locked)


def lock_rater(rater_id: int) -> Rater:
    """Step 1: serialises everything one rater does (two tabs asking at once)."""
    return Rater.objects.select_for_update(of=("self",)).select_related("campaign").get(
        pk=rater_id
    )


def lock_pairs(pair_ids: Iterable[int], *, skip_locked: bool = False) -> list[Pair]:
    """Step 2: lock pairs in ascending id order; with ``skip_locked`` return only those won."""
    ids = sorted(set(pair_ids))
    if not ids:
        return []
    qs = Pair.objects.filter(pk__in=ids).order_by("pk")
    return list(qs.select_for_update(skip_locked=skip_locked and skip_locked_supported(),
                                     no_key=True))


def lock_first_pair(candidates: QuerySet[Pair], *, may_wait: bool) -> Pair | None:
    """Step 2 while choosing: the first candidate nobody else holds, locked for us.

    ``SKIP LOCKED`` keeps concurrent raters from queueing behind one hot row. If every
    candidate was locked, wait for the first one rather than report "no work" falsely --
    but only (a) when the transaction holds no pair lock yet (``may_wait``) and (b) for one
    row by primary key: a scanning ``FOR UPDATE ... LIMIT 1`` would lock rows in the
    query's order and could close a cycle with another waiter.
    """
    skip = skip_locked_supported()
    if skip:
        pair = candidates.select_for_update(skip_locked=True, of=("self",), no_key=True).first()
        if pair is not None or not may_wait:
            return pair
    pk = candidates.values_list("pk", flat=True).first()
    if pk is None:
        return None
    (pair,) = lock_pairs([pk])
    if candidates.filter(pk=pk).exists():  # re-check on fresh data, under the lock
        return pair
    # Someone filled it meanwhile; take any other free one without waiting again.
    return (candidates.select_for_update(skip_locked=skip, of=("self",), no_key=True).first()
            if skip else None)


_CLAIM_SQL = """
UPDATE {pair} SET taken = taken + 1
WHERE id = (
    SELECT p.id FROM {pair} p
    WHERE p.campaign_id = %s AND p.active AND p.kind = %s AND p.taken < %s
      AND NOT EXISTS (
          SELECT 1 FROM {assignment} a
          WHERE a.pair_id = p.id AND a.rater_id = %s AND a.state <> %s)
    ORDER BY p.taken DESC, p.id
    LIMIT 1
    FOR UPDATE OF p SKIP LOCKED)
RETURNING {columns}
"""


def claim_deid_pair(campaign_id: int, rater_id: int, k: int) -> Pair | None:
    """Step 2, hot path on PostgreSQL: lock the first free candidate with SKIP LOCKED and
    take one slot (``taken + 1``) in one statement. Same choice as ``lock_first_pair`` on
    the same candidates; None when every candidate is full, seen or locked right now."""
    if not skip_locked_supported():
        return None
    fields = [f for f in Pair._meta.concrete_fields]
    sql = _CLAIM_SQL.format(
        pair=connection.ops.quote_name(Pair._meta.db_table),
        assignment=connection.ops.quote_name(Assignment._meta.db_table),
        columns=", ".join(connection.ops.quote_name(f.column) for f in fields),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [campaign_id, Pair.Kind.DEID, k, rater_id, Assignment.State.EXPIRED])
        row = cursor.fetchone()
    if row is None:
        return None
    values = [f.from_db_value(v, None, connection) if hasattr(f, "from_db_value") else v
              for f, v in zip(fields, row, strict=True)]
    return Pair.from_db(connection.alias, [f.attname for f in fields], values)


def lock_assignments(
    pair_ids: Iterable[int], condition: Q | None = None, **filters: object
) -> list[Assignment]:
    """Step 3: assignments of pairs the caller has locked already, ascending id."""
    return list(
        Assignment.objects.filter(pair_id__in=list(pair_ids), **filters)
        .filter(condition or Q())
        .order_by("pk")
        .select_for_update(of=("self",))
    )


def lock_assignment(assignment_id: int) -> Assignment:
    return Assignment.objects.select_for_update(of=("self",)).select_related("pair").get(
        pk=assignment_id
    )


def lock_label_update(campaign_id: int) -> None:
    """Serialise label recomputations of one campaign (the debounced task and a round's
    labels stage may run at once; both would insert the same PairLabels). A transaction-scoped
    advisory lock: no row lock, so it cannot join a cycle with the rating flow's order above.
    SQLite has one writer at a time already."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", [0x1ABE1, int(campaign_id)])
