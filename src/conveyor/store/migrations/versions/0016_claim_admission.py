"""flow control: PostgreSQL admits a claim's limited candidates inside the claim statement

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 21:30:00.000000

`conveyor_admit` is called by the `claim` and `claim_any` statements themselves (only
when they picked a limited candidate), so a limited claim is one statement and one commit,
as a plain one: before, the claim committed, then a second transaction locked the
candidates again, read their limits, locked the free slots and buckets and started them
(about six round trips and a second commit per claim). The function is the greedy plan
of store/admission.py (which SQLite still runs in Python), in the claim's transaction:

1. lock the candidates still queued (the claim locked them already: a re-check), and read
   the limits each is under with their definitions (NULL kind: not defined yet; the running
   quota's size is its user's own cap, else the default, NULL: no cap);
2. make what their keys lack: slots 1..size of each concurrency key, a full bucket of each
   rate key, in one global order (two claims making the same rows never wait in a cycle);
3. lock up to the needed number of free slots of each key (FOR UPDATE SKIP LOCKED: a slot
   another claim is taking is skipped) and each rate key's bucket (FOR UPDATE, in one
   global order), refilled to now;
4. in claim order (priority DESC, fair_tag, id), admit a job only if every limit it is under
   admits it (a free slot of each concurrency limit, a token of each rate), else nothing;
5. hold the slots, spend the tokens, start the admitted jobs with their `started` events.

Written for the planner of a table never analyzed (a new database, or a burst before
autovacuum): `state || ''` and `job_id || ''` keep it from reading rows by id through a
partial claim index or ix_limit_slots_job_id (measured: 6 ms and 30 ms per call), and the
slots are held by their row ids (`ctid`, rows this transaction locked).

It returns the started jobs as the claim returns its own (the claim's columns), then, when
a candidate was refused, one row without an id whose `refused` ({limit: count}) and
`retry_in` (seconds to a refused rate's next token) are the driver's `Claimed` figures.
SQLite keeps no function: nothing to create there.
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_PG_FUNCTION = r"""
CREATE OR REPLACE FUNCTION conveyor_admit(
    p_ids text[], p_worker text, p_now timestamptz, p_until timestamptz,
    p_type text, p_state text, p_data jsonb)
RETURNS TABLE (id varchar, type varchar, queue varchar, payload jsonb, attempt integer,
    max_attempts integer, timeout_s double precision, priority integer, owner_id varchar,
    idempotency_key varchar, run_at timestamptz, refused jsonb, retry_in double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    -- Every limit of every candidate, one entry per (job, limit), in claim order.
    d_job text[]; d_name text[]; d_key text[]; d_kind text[]; d_max int[];
    d_rate int[]; d_per float8[]; d_burst int[];
    d_pair text[];       -- '["name","key"]': the key of `free` and `tokens` below
    d_have int[];        -- a concurrency key's slot rows so far (its largest slot number)
    free jsonb;          -- '["name","key"]' -> [[slot, "its row's ctid"], ...], smallest first
    tokens jsonb;        -- '["name","key"]' -> tokens in the bucket now (refilled)
    pair text;
    n int; i int; lo int; hi int;
    blocker text;
    admitted text[] := '{}';
    h_tid tid[] := '{}'; h_job text[] := '{}';  -- the slots to hold (rows locked in 3.)
    spent jsonb := '{}';  -- '["name","key"]' -> tokens left, for the rates spent from
    refusals jsonb := '{}';
    wait float8;
    soonest float8;
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN;
    END IF;

    -- 1. The candidates' limits, each candidate locked, in claim order (array_agg keeps the
    -- order of its sorted subquery), with what each concurrency key has of its slots.
    SELECT array_agg(f.job_id), array_agg(f.name), array_agg(f.key), array_agg(f.kind),
        array_agg(f.max_running), array_agg(f.rate_limit), array_agg(f.per_s),
        array_agg(f.burst), array_agg(jsonb_build_array(f.name, f.key)::text),
        array_agg(CASE WHEN f.kind = 'concurrency' THEN coalesce((SELECT max(s.slot)
            FROM limit_slots AS s WHERE s.name = f.name AND s.key = f.key), 0) END)
    INTO d_job, d_name, d_key, d_kind, d_max, d_rate, d_per, d_burst, d_pair, d_have
    FROM (
        SELECT jl.job_id, mine.pos, jl.name, jl.key, fl.kind,
            coalesce((SELECT u.max_running FROM users AS u
                WHERE jl.name = 'quota.running' AND u.id = jl.key AND u.max_running > 0),
                fl.max_running) AS max_running,
            fl.rate_limit, fl.per_s, fl.burst
        FROM (
            SELECT cand.id,
                row_number() OVER (ORDER BY cand.priority DESC, cand.fair_tag, cand.id) AS pos
            FROM (SELECT jobs.id, jobs.priority, jobs.fair_tag, jobs.state, jobs.limited
                FROM jobs WHERE jobs.id = ANY(p_ids)
                ORDER BY jobs.id FOR UPDATE SKIP LOCKED) AS cand
            WHERE cand.state || '' = 'queued' AND cand.limited  -- by id (pk_jobs), as below
        ) AS mine
        JOIN job_limits AS jl ON jl.job_id = mine.id
        LEFT JOIN flow_limits AS fl ON fl.name = jl.name
        ORDER BY mine.pos, jl.name
    ) AS f;
    IF d_job IS NULL THEN
        RETURN;
    END IF;
    n := cardinality(d_job);

    -- 2. What the keys lack (only when one lacks something: most claims skip both): their
    -- slots 1..size, a full bucket.
    IF EXISTS (SELECT 1 FROM unnest(d_have, d_max) AS u(have, size) WHERE u.have < u.size) THEN
        INSERT INTO limit_slots (name, key, slot)
        SELECT d.name, d.key, g.slot
        FROM (SELECT DISTINCT u.name, u.key, u.have, u.size
            FROM unnest(d_name, d_key, d_have, d_max) AS u(name, key, have, size)
            WHERE u.have < u.size) AS d
        CROSS JOIN LATERAL generate_series(d.have + 1, d.size) AS g(slot)
        ORDER BY d.name, d.key, g.slot
        ON CONFLICT DO NOTHING;
    END IF;
    IF 'rate' = ANY(d_kind) THEN
        INSERT INTO rate_buckets (name, key, tokens, refreshed_at)
        SELECT DISTINCT ON (u.name, u.key) u.name, u.key, coalesce(u.burst, u.rate)::float8,
            p_now
        FROM unnest(d_name, d_key, d_kind, d_rate, d_burst) AS u(name, key, kind, rate, burst)
        WHERE u.kind = 'rate'
        ORDER BY u.name, u.key
        ON CONFLICT DO NOTHING;
    END IF;

    -- 3. Up to the needed number of free slots of each key, locked (SKIP LOCKED: a slot
    -- another claim is taking is not ours; the guarantee is this lock and the UPDATE's
    -- `job_id IS NULL` below), and each rate key's bucket, locked in one global order.
    SELECT coalesce(jsonb_object_agg(x.pair, x.slots), '{}') INTO free
    FROM (
        SELECT jsonb_build_array(f.name, f.key)::text AS pair,
            jsonb_agg(jsonb_build_array(f.slot, f.ctid::text) ORDER BY f.slot) AS slots
        FROM (SELECT u.name, u.key, max(u.size) AS size, count(*) AS need
            FROM unnest(d_name, d_key, d_kind, d_max) AS u(name, key, kind, size)
            WHERE u.kind = 'concurrency' AND u.size IS NOT NULL
            GROUP BY u.name, u.key) AS w
        CROSS JOIN LATERAL (
            SELECT s.name, s.key, s.slot, s.ctid FROM limit_slots AS s
            WHERE s.name = w.name AND s.key = w.key AND s.slot <= w.size
                AND (s.job_id || '') IS NULL  -- by primary key, never ix_limit_slots_job_id
            ORDER BY s.slot LIMIT w.need
            FOR UPDATE SKIP LOCKED
        ) AS f
        GROUP BY f.name, f.key
    ) AS x;
    tokens := '{}';
    IF 'rate' = ANY(d_kind) THEN
        SELECT coalesce(jsonb_object_agg(jsonb_build_array(b.name, b.key)::text,
                least(coalesce(b.burst, b.rate)::float8, b.tokens
                    + greatest(0, extract(epoch FROM p_now - b.refreshed_at)) * b.rate / b.per_s)),
            '{}') INTO tokens
        FROM (
            SELECT rb.name, rb.key, rb.tokens, rb.refreshed_at, r.rate, r.per_s, r.burst
            FROM rate_buckets AS rb
            JOIN (SELECT DISTINCT u.name, u.key, u.rate, u.per_s, u.burst
                FROM unnest(d_name, d_key, d_kind, d_rate, d_per, d_burst)
                    AS u(name, key, kind, rate, per_s, burst)
                WHERE u.kind = 'rate') AS r ON rb.name = r.name AND rb.key = r.key
            ORDER BY rb.name, rb.key
            FOR UPDATE OF rb
        ) AS b;
    END IF;

    -- 4. The greedy plan: each job in claim order takes a slot of every concurrency limit
    -- and a token of every rate it is under, or nothing (store/admission.py, `plan`).
    lo := 1;
    WHILE lo <= n LOOP
        hi := lo;  -- the job's entries are lo .. hi - 1
        WHILE hi <= n AND d_job[hi] = d_job[lo] LOOP
            hi := hi + 1;
        END LOOP;
        blocker := NULL;
        FOR i IN lo .. hi - 1 LOOP
            pair := d_pair[i];
            IF d_kind[i] = 'concurrency' THEN
                CONTINUE WHEN d_max[i] IS NULL;  -- a running quota without a cap
                CONTINUE WHEN jsonb_array_length(free -> pair) > 0;
            ELSIF d_kind[i] = 'rate' THEN
                CONTINUE WHEN (tokens ->> pair)::float8 >= 1;
                IF d_rate[i] > 0 THEN
                    wait := (1 - (tokens ->> pair)::float8) / (d_rate[i] / d_per[i]);
                    soonest := least(soonest, wait);
                END IF;
            END IF;
            blocker := d_name[i];  -- not defined yet, no free slot, or no token
            EXIT;
        END LOOP;
        IF blocker IS NOT NULL THEN
            refusals := jsonb_set(refusals, ARRAY[blocker],
                to_jsonb(coalesce((refusals ->> blocker)::int, 0) + 1));
        ELSE
            FOR i IN lo .. hi - 1 LOOP
                pair := d_pair[i];
                IF d_kind[i] = 'concurrency' AND d_max[i] IS NOT NULL THEN
                    h_tid := h_tid || (free -> pair -> 0 ->> 1)::tid;
                    h_job := h_job || d_job[i];
                    free := jsonb_set(free, ARRAY[pair], (free -> pair) - 0);
                ELSIF d_kind[i] = 'rate' THEN
                    tokens := jsonb_set(tokens, ARRAY[pair],
                        to_jsonb((tokens ->> pair)::float8 - 1));
                    spent := jsonb_set(spent, ARRAY[pair], tokens -> pair);
                END IF;
            END LOOP;
            admitted := admitted || d_job[lo];
        END IF;
        lo := hi;
    END LOOP;

    -- 5. Hold the slots, spend the tokens, start the admitted jobs with their events.
    IF cardinality(admitted) > 0 THEN
        -- By the rows' ids (a TID scan, whatever the planner thinks of the table's size):
        -- they are locked since 3., so no other transaction has moved them.
        UPDATE limit_slots AS s SET job_id = h_job[array_position(h_tid, s.ctid)]
        WHERE s.ctid = ANY(h_tid) AND (s.job_id || '') IS NULL;
        IF spent <> '{}' THEN
            UPDATE rate_buckets AS b SET tokens = t.value::float8, refreshed_at = p_now
            FROM jsonb_each_text(spent) AS t
            WHERE b.name = t.key::jsonb ->> 0 AND b.key = t.key::jsonb ->> 1;
        END IF;
        RETURN QUERY
        WITH claimed AS (
            UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, worker_id = p_worker,
                started_at = p_now, lease_expires_at = p_until
            WHERE jobs.id = ANY(admitted)  -- queued: locked and checked in 1.
            RETURNING jobs.id, jobs.type, jobs.queue, jobs.payload, jobs.attempt,
                jobs.max_attempts, jobs.timeout_s, jobs.priority, jobs.owner_id,
                jobs.idempotency_key, jobs.run_at
        ),
        logged AS (
            INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt,
                data, created_at)
            SELECT txid_current(), p_type, c.id, c.owner_id, c.queue, c.type, p_state,
                c.attempt, p_data, p_now
            FROM claimed AS c
        )
        SELECT c.id, c.type, c.queue, c.payload, c.attempt, c.max_attempts, c.timeout_s,
            c.priority, c.owner_id, c.idempotency_key, c.run_at, NULL::jsonb, NULL::float8
        FROM claimed AS c;
    END IF;
    IF refusals <> '{}' THEN
        RETURN QUERY SELECT NULL::varchar, NULL::varchar, NULL::varchar, NULL::jsonb,
            NULL::int, NULL::int, NULL::float8, NULL::int, NULL::varchar, NULL::varchar,
            NULL::timestamptz, refusals, soonest;
    END IF;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS conveyor_admit(text[], text, timestamptz, timestamptz,"
            " text, text, jsonb)"
        )
