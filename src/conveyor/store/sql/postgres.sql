-- PostgreSQL: every hand-written statement of the queue, by name (store/sql/__init__.py).
-- Parameters are asyncpg's $1, $2, ...; batches come in as arrays, one per column, so each
-- statement is prepared once whatever the batch size. The statements that change jobs on
-- the hot path write their events in the same statement (a data-modifying CTE): the change
-- and its event commit together in one round trip. What an event says (its type, state and
-- data) comes in as parameters, decided once in store/events.py; the SQL only copies the
-- job's columns beside it.

-- fragment: batch_columns
-- The first columns of `enqueue`'s and `workflow_steps`' rows, from the unnest `x` of their
-- arrays $1-$12: a NOT NULL column that every row shares may come as an array of its one
-- value, which `coalesce` gives to the rows the unnest's padding left NULL (a full array
-- has no NULL).
    SELECT x.id, coalesce(x.owner_id, ($2::text[])[1]) AS owner_id,
        coalesce(x.queue, ($3::text[])[1]) AS queue, coalesce(x.type, ($4::text[])[1]) AS type,
        x.payload, coalesce(x.priority, ($6::int[])[1]) AS priority,
        coalesce(x.state, ($7::text[])[1]) AS state,
        coalesce(x.max_attempts, ($8::int[])[1]) AS max_attempts,
        coalesce(x.run_at, ($9::timestamptz[])[1]) AS run_at, x.timeout_s, x.idempotency_key,

-- name: enqueue
-- New jobs, their 'created' events ($15: the type) and one NOTIFY per queue that got
-- runnable jobs, delivered when the statement commits. $13 is the shared created_at.
-- $16 false (CONVEYOR_SUBMIT_SYNCHRONOUS_COMMIT=off): `synchronous_commit` is off for the
-- rest of this transaction (set_config's is_local), so its commit does not wait for the
-- WAL flush, without a round trip of its own (docs/design.md: what that risks).
-- $20: limited (the job has job_limits rows, written next in the same transaction).
-- $17, $18: unique_key, unique_states. ON CONFLICT without a target: a taken idempotency
-- key and a taken unique key (uq_jobs_unique) both skip the row, never abort the statement.
-- $21: each job's trace context (NULL unless its submitter traced; conveyor/tracing.py).
-- Rows go in by key (owner and idempotency key, then unique key; keyless ones last, in
-- the batch's order): ON CONFLICT waits for an uncommitted equal key, so two batches
-- naming the same keys in other orders wait for each other in one order rather than
-- deadlock. Fair ranks still follow the batch's order (n).
-- A column whose every value is NULL may come as NULL rather than an array of NULLs (the
-- multi-argument unnest pads it with NULLs: the same rows, less for the client to encode);
-- a NOT NULL column whose every value is the same may come as an array of that one value
-- (`coalesce` gives it to the rows the padding left NULL; a full array has no NULL). The
-- client's driver checks and encodes each element it sends (drivers/postgres.py `_compact`).
-- $19: each job's fair key (NULL: due-time order). Its fair tag (docs/flow-control.md "Fair
-- dispatch") is computed per (queue, priority, key) of the batch, not per row: the band's
-- first keyed job (rb = 1) reads its head (V, the first row of ix_jobs_claim: its order,
-- spelled out, keeps the planner on that index rather than on ix_jobs_claim_any filtered
-- by queue), each key's first job (r = 1) the key's last queued tag (L, the last row of
-- ix_jobs_fair) and its weight (the owner's fair_weight when the key is the job's owner,
-- else 1); windows hand them to the band's and the key's other jobs (a join of rows to groups was a nested loop: quadratic in
-- the batch's keys), and each job takes max(V, L [, its run_at]) + rank / weight.
WITH u AS (
    -- include: batch_columns
        coalesce(x.tags, ($12::text[])[1]) AS tags, x.schedule_id, x.fair_key, x.unique_key,
        x.unique_states, coalesce(x.limited, ($20::bool[])[1]) AS limited, x.trace_context, x.n
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
        $7::text[], $8::int[], $9::timestamptz[], $10::float8[], $11::text[], $12::text[],
        $14::text[], $19::text[], $17::text[], $18::text[], $20::bool[], $21::text[])
        WITH ORDINALITY AS x(id, owner_id, queue, type, payload, priority, state, max_attempts,
            run_at, timeout_s, idempotency_key, tags, schedule_id, fair_key, unique_key,
            unique_states, limited, trace_context, n)
),
t AS (
    SELECT u.*,
        row_number() OVER (PARTITION BY u.queue, u.priority, u.fair_key ORDER BY u.n) AS r,
        row_number() OVER (PARTITION BY u.queue, u.priority, u.fair_key IS NULL
            ORDER BY u.n) AS rb
    FROM u
),
firsts AS (
    SELECT t.*,
        CASE WHEN t.rb = 1 AND t.fair_key IS NOT NULL THEN (
            SELECT j.fair_tag FROM jobs AS j
            WHERE j.state = 'queued' AND j.queue = t.queue AND j.priority = t.priority
            ORDER BY j.queue, j.priority DESC, j.fair_tag LIMIT 1) END AS v1,
        CASE WHEN t.r = 1 AND t.fair_key IS NOT NULL THEN (
            SELECT max(j.fair_tag) FROM jobs AS j
            WHERE j.state = 'queued' AND j.queue = t.queue AND j.priority = t.priority
                AND j.fair_key = t.fair_key AND j.fair_key IS NOT NULL) END AS l1,
        CASE WHEN t.r = 1 AND t.fair_key IS NOT NULL THEN coalesce((
            SELECT u.fair_weight FROM users AS u
            WHERE u.id = t.fair_key AND t.owner_id = t.fair_key AND u.fair_weight > 0), 1)
            END AS w1
    FROM t
),
h AS (
    SELECT f.*, max(f.v1) OVER (PARTITION BY f.queue, f.priority) AS v,
        max(f.l1) OVER g AS l, max(f.w1) OVER g AS w
    FROM firsts AS f
    WINDOW g AS (PARTITION BY f.queue, f.priority, f.fair_key)
),
inserted AS (
    INSERT INTO jobs (id, owner_id, queue, type, payload, priority, state, attempt,
        max_attempts, run_at, timeout_s, idempotency_key, progress, errors, tags,
        schedule_id, created_at, fair_key, fair_tag, unique_key, unique_states, limited,
        trace_context)
    SELECT h.id, h.owner_id, h.queue, h.type, h.payload::jsonb, h.priority, h.state, 0,
        h.max_attempts, h.run_at, h.timeout_s, h.idempotency_key, 0, '[]'::jsonb,
        h.tags::jsonb, h.schedule_id, $13, h.fair_key,
        CASE WHEN h.fair_key IS NULL THEN extract(epoch FROM h.run_at)
            ELSE greatest(h.v, h.l, CASE WHEN h.v IS NULL OR h.state <> 'queued'
                THEN extract(epoch FROM h.run_at) END) + h.r / h.w END,
        h.unique_key, h.unique_states, h.limited, h.trace_context
    FROM h ORDER BY h.owner_id, h.idempotency_key, h.unique_key, h.n
    ON CONFLICT DO NOTHING
    RETURNING id, queue, state, owner_id, type, 0 AS attempt
),
logged AS (
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt,
        data, created_at)
    SELECT txid_current(), $15::text, id, owner_id, queue, type, state, 0, NULL, $13
    FROM inserted
),
woken AS (
    SELECT pg_notify('conveyor_jobs', queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'queued') AS q
),
relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true) WHERE NOT $16::bool
)
SELECT id, (SELECT count(*) FROM woken) AS woken, (SELECT count(*) FROM relaxed) AS relaxed
FROM inserted

-- name: enqueue_one
-- `enqueue` for a single job, its columns as scalars ($1-$12, $14, $17-$21; the same numbering):
-- the one-at-a-time submit's statement. Arrays cost the client a type check per argument
-- and element (asyncpg looks for nested arrays) and the server an unnest: measured about a
-- third of the client's CPU per single submit. Its fair tag as in `enqueue` (rank 1); the
-- probes are initplans, run only for a job with a fair key (OFFSET 0: each runs once, not
-- once per reference).
WITH inserted AS (
    -- include: one_job
    ON CONFLICT DO NOTHING
    RETURNING id, queue, state, owner_id, type
),
-- include: one_job_logged

-- name: enqueue_fresh
-- `enqueue_one` for a job no row can duplicate: no idempotency key, no unique key (most
-- single submits; $11, $17, $18 are NULL). Its row can conflict with nothing but a fresh id
-- (uq_jobs_idempotency and uq_jobs_unique hold no row for it, uq_jobs_workflow_id_step none
-- without a workflow), so it is a plain INSERT: ON CONFLICT's speculative insertion probes
-- every unique index before the insert and writes a confirmation record after it
-- (EXPLAIN ANALYZE of one insert: 24 -> 20 buffers, 10 -> 9 WAL records). An equal id would
-- be an error here, not a duplicate: ids are new uuid7s, drawn once per job.
WITH inserted AS (
    -- include: one_job
    RETURNING id, queue, state, owner_id, type
),
-- include: one_job_logged

-- name: enqueue_fresh_limited
-- `enqueue_fresh` for a job under limits, with its job_limits rows ($22 the limits' names,
-- $23 their keys) in the same statement: one round trip in its own transaction, where
-- BEGIN, the insert, `record_limits` and COMMIT were four (a limited job's submit after
-- 20 ms idle: 1.04 ms against a plain job's 0.77-0.80 before, 0.99-1.03 against 0.91-0.94
-- after). A fresh row is always inserted, so every row of the unnest is its.
WITH inserted AS (
    -- include: one_job
    RETURNING id, queue, state, owner_id, type
),
held AS (
    INSERT INTO job_limits (job_id, name, key)
    SELECT i.id, t.name, t.key FROM inserted AS i, unnest($22::text[], $23::text[]) AS t(name, key)
),
-- include: one_job_logged

-- fragment: one_job
-- The jobs row of `enqueue_one`, `enqueue_fresh` and `enqueue_fresh_limited` (their
-- numbering).
    INSERT INTO jobs (id, owner_id, queue, type, payload, priority, state, attempt,
        max_attempts, run_at, timeout_s, idempotency_key, progress, errors, tags,
        schedule_id, created_at, fair_key, fair_tag, unique_key, unique_states, limited,
        trace_context)
    VALUES ($1::text, $2::text, $3::text, $4::text, $5::text::jsonb, $6::int, $7::text, 0,
        $8::int, $9::timestamptz, $10::float8, $11::text, 0, '[]'::jsonb, $12::text::jsonb,
        $14::text, $13, $19::text,
        CASE WHEN $19::text IS NULL THEN extract(epoch FROM $9::timestamptz) ELSE (
            SELECT greatest(h.v, h.l, CASE WHEN h.v IS NULL OR $7::text <> 'queued'
                THEN extract(epoch FROM $9::timestamptz) END) + 1 / h.w
            FROM (SELECT
                (SELECT j.fair_tag FROM jobs AS j
                    WHERE j.state = 'queued' AND j.queue = $3::text AND j.priority = $6::int
                    ORDER BY j.queue, j.priority DESC, j.fair_tag LIMIT 1) AS v,
                (SELECT max(j.fair_tag) FROM jobs AS j
                    WHERE j.state = 'queued' AND j.queue = $3::text AND j.priority = $6::int
                        AND j.fair_key = $19::text AND j.fair_key IS NOT NULL) AS l,
                coalesce((SELECT u.fair_weight FROM users AS u
                    WHERE $2::text = $19::text AND u.id = $19::text AND u.fair_weight > 0),
                    1) AS w
                OFFSET 0
            ) AS h) END,
        $17::text, $18::text, $20::bool, $21::text)

-- fragment: one_job_logged
-- The rest of `enqueue_one`, `enqueue_fresh` and `enqueue_fresh_limited`: the created
-- event, the NOTIFY, the relaxed commit, the answer.
logged AS (
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt,
        data, created_at)
    SELECT txid_current(), $15::text, id, owner_id, queue, type, state, 0, NULL, $13
    FROM inserted
),
woken AS (
    SELECT pg_notify('conveyor_jobs', queue) FROM inserted WHERE state = 'queued'
),
relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true) WHERE NOT $16::bool
)
SELECT id, (SELECT count(*) FROM woken) AS woken, (SELECT count(*) FROM relaxed) AS relaxed
FROM inserted

-- name: existing
-- The stored jobs that duplicates' (owner, idempotency key) pairs name, with what they
-- were asked to be (the same request again, or another reusing the key?).
SELECT jobs.id, jobs.state, jobs.owner_id, jobs.idempotency_key, jobs.type, jobs.queue,
    jobs.payload
FROM jobs
JOIN unnest($1::text[], $2::text[]) AS k(owner_id, idempotency_key)
    ON jobs.owner_id = k.owner_id AND jobs.idempotency_key = k.idempotency_key

-- name: existing_unique
-- The live jobs (uq_jobs_unique's rows) that duplicates' (owner, unique key) pairs name.
SELECT jobs.id, jobs.state, jobs.unique_key FROM jobs
JOIN unnest($1::text[], $2::text[]) AS k(owner_id, unique_key)
    ON jobs.owner_id = k.owner_id AND jobs.unique_key = k.unique_key
WHERE strpos(jobs.unique_states, ',' || jobs.state || ',') > 0

-- name: record_callbacks
-- The job_callbacks rows of newly inserted jobs, in the enqueue's transaction.
INSERT INTO job_callbacks (job_id, owner_id, url, created_at)
SELECT t.job_id, t.owner_id, t.url, $4
FROM unnest($1::text[], $2::text[], $3::text[]) AS t(job_id, owner_id, url)

-- fragment: started_columns
-- What a started job's UPDATE returns (the driver's `_claimed` reads them in this order). A
-- workflow's step also says its workflow, its name and whether it has dependencies, whose
-- results the worker reads before it runs it: a step without any (a fan-out's) costs the
-- worker no query (migration 0028).
    RETURNING jobs.id, jobs.type, jobs.queue, jobs.payload, jobs.attempt, jobs.max_attempts,
        jobs.timeout_s, jobs.priority, jobs.owner_id, jobs.idempotency_key, jobs.run_at,
        jobs.trace_context, jobs.workflow_id, jobs.step, jobs.depends

-- fragment: admissible
-- A claim's candidate filter (claim, claim_any; $4: now): a limited job only while each of
-- its limits has a free slot or a token for its key now, so a full key does not hold the
-- claim's LIMIT (head of line; `claim_one_unprobed` goes without it while nothing is
-- refused); `NOT limited` first: unlimited jobs skip the probe.
        AND (NOT jobs.limited OR NOT EXISTS (
            SELECT 1 FROM job_limits AS jl LEFT JOIN flow_limits AS fl ON fl.name = jl.name
                LEFT JOIN users AS u ON jl.name = 'quota.running' AND u.id = jl.key
                    AND u.max_running > 0
            WHERE jl.job_id = jobs.id AND (fl.kind IS NULL
                OR fl.kind = 'concurrency' AND coalesce(u.max_running, fl.max_running) <= (
                    SELECT count(*) FROM limit_slots AS s WHERE s.name = jl.name
                        AND s.key = jl.key AND s.job_id IS NOT NULL
                        AND s.slot <= coalesce(u.max_running, fl.max_running))
                OR fl.kind = 'rate' AND EXISTS (
                    SELECT 1 FROM rate_buckets AS b WHERE b.name = jl.name AND b.key = jl.key
                        AND b.tokens + greatest(0, extract(epoch FROM $4 - b.refreshed_at))
                            * fl.rate_limit / fl.per_s < 1))
            OFFSET 0))

-- fragment: unpaused
-- A claim's candidate is not in a paused queue: a per-row probe of the tiny queue_pauses.
        AND NOT EXISTS (SELECT 1 FROM queue_pauses AS p WHERE p.queue = jobs.queue OFFSET 0)

-- fragment: claim_filter
-- What `claim`, `claim_one` and `claim_any` check after their queue condition: the pause
-- and limit probes.
        -- include: unpaused
        -- include: admissible

-- fragment: claim_logged
-- The started events of a claim's `claimed` rows (the claim's numbering: $4 now, $6-$8
-- the event's type, state and data).
logged AS (
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
        created_at)
    SELECT txid_current(), $6::text, c.id, c.owner_id, c.queue, c.type, $7::text, c.attempt,
        $8::jsonb, $4
    FROM claimed AS c
)

-- fragment: claim_rest
-- What `claim`, `claim_one` and `claim_any` share after their order: the UPDATE and its
-- events (then `claim_answer`, or `claim_one`'s own).
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, worker_id = $3,
        started_at = $4, lease_expires_at = $5
    WHERE jobs.id = ANY(ARRAY(SELECT id FROM picked WHERE NOT limited))
    -- include: started_columns
),
-- include: claim_logged

-- fragment: claim_answer
-- The claimed rows, each with the limited candidates' ids (`waiting`; one row, its job
-- columns NULL, when nothing was claimed).
SELECT c.*, w.waiting FROM (SELECT array_agg(id) AS waiting FROM picked WHERE limited) AS w
LEFT JOIN claimed AS c ON true

-- name: claim
-- Up to $2 queued jobs of the queues $1, highest priority first, then by fair tag (due time
-- when fair dispatch is off; docs/flow-control.md "Fair dispatch"), for worker $3.
-- Paused queues are skipped by a per-row probe of the tiny queue_pauses table. OFFSET 0
-- keeps it a filter on the claim index's ordered scan: as an anti-join the planner
-- estimates one matching row and sorts every queued job instead (measured: 120 ms vs 2 ms
-- at 20,000 queued). The UPDATE takes the picked rows by primary key (`= ANY(ARRAY(...))`,
-- an index scan on pk_jobs at 1k, 20k and 200k rows, analyzed or not): joined to `picked`
-- it read the whole table (Seq Scan + Hash Join) while the planner thought it small.
-- $4: now, $5: the lease's end; $6-$8: the event's type, state, data.
-- Limited jobs (docs/flow-control.md) are picked and locked too, but not started here:
-- their ids come back in `waiting` (one row even when nothing was claimed) and the driver
-- admits them (`limit_start`, else `limit_demands` .. `limit_admit`). A per-row
-- probe leaves out those whose limits have no free slot or token now, so a full key never
-- holds the claim's LIMIT (head of line); `NOT limited` first: unlimited jobs skip it.
WITH picked AS (
    SELECT id, limited FROM jobs
    WHERE state = 'queued' AND queue = ANY($1::text[])
        -- include: claim_filter
    ORDER BY priority DESC, fair_tag, id
    -- include: claim_rest
-- include: claim_answer

-- name: claim_queue
-- `claim` from the one queue $1, a scalar, planned for its value (a busy worker of one
-- queue: the common case). With `queue = $1` the order's queue key drops out and
-- ix_jobs_claim gives `priority DESC, fair_tag, id` for that queue as it stands, so no plan
-- sorts: `queue = ANY($1)` does not (an array of one is not an equality to the planner),
-- and without column statistics, or with the queue a small share of the queued rows, it
-- read every queued row of the queue through ix_jobs_claim, ran each limited one's probe,
-- then sorted (2,808 rows and 73 ms for a claim of 64 beside 20,000 of another queue,
-- never analyzed; tests/store/test_claim_plans.py).
WITH picked AS (
    SELECT id, limited FROM jobs
    WHERE state = 'queued' AND queue = $1::text
        -- include: claim_filter
    ORDER BY priority DESC, fair_tag, id
    -- include: claim_rest
-- include: claim_answer

-- name: claim_one
-- `claim` from the one queue $1, a scalar (a worker of one queue: the common case). Its
-- generic plan is an ordered scan of ix_jobs_claim with `queue = $1` as its Index Cond
-- whatever that queue's share of the queued rows, so it may run unplanned: an idle
-- worker's wake-up claim does (`arm_claim`; docs/design.md "Idle latency"), and so does
-- every claim of one queue that has a transaction anyway (told early, or after limited
-- candidates: `claim_begin_generic` is its BEGIN). Its order
-- names the queue (a no-op under `queue = $1`) so that only ix_jobs_claim gives it:
-- without it the generic plan, blind to $1, scanned ix_jobs_claim_any filtered by queue
-- (cheaper for a queue that holds every queued row, endless for a rare one behind them).
WITH picked AS (
    SELECT id, limited FROM jobs
    WHERE state = 'queued' AND queue >= $1::text AND queue <= $1::text
        -- include: claim_filter
    ORDER BY queue, priority DESC, fair_tag, id
    -- include: claim_rest
-- include: claim_one_answer

-- fragment: usual_plans
-- `usual`: the plan settings `claim_begin_generic` set, back to the session's for the rest
-- of the transaction, as the statement runs (`claim_one_answer`, `claim_one_admit`).
, usual AS (
    SELECT set_config('plan_cache_mode', NULL, true), set_config('enable_sort', NULL, true),
        set_config('enable_seqscan', NULL, true), set_config('jit', NULL, true)
)

-- fragment: claim_one_answer
-- The end of `claim_one` and `claim_one_unprobed`: `claim_answer`, and the plan settings
-- back to the session's for the rest of the transaction, as this runs (its own plan is
-- made already): what `claim_begin_generic` set is checked safe for this statement only,
-- and the admission of limited candidates that may follow is planned as usual, without a
-- `claim_plan_default` round trip (set_config's NULL: SET ... TO DEFAULT). Once, whatever
-- the rows.
-- include: usual_plans
SELECT c.*, w.waiting FROM (SELECT array_agg(id) AS waiting FROM picked WHERE limited) AS w
CROSS JOIN usual LEFT JOIN claimed AS c ON true

-- name: claim_one_unprobed
-- `claim_one` without the limit probe (`admissible`): limited candidates are picked
-- whether their keys have room or not, and the admission that follows refuses those
-- without. For a worker whose limited claims have been refusing nothing (the driver's
-- `_probing`): the probe read each limited candidate's limits and counted its key's held
-- slots, about a third of what a limited job added to the claim, to leave out candidates
-- that were not there. After a claim whose admission refused a candidate the driver
-- claims again with the probe at once, and probes for its next PROBE_AFTER_REFUSAL
-- claims: a full key at the head of the queue costs one claim statement more in that
-- many (docs/flow-control.md "Head of line").
WITH picked AS (
    SELECT id, limited FROM jobs
    WHERE state = 'queued' AND queue >= $1::text AND queue <= $1::text
        -- include: unpaused
    ORDER BY queue, priority DESC, fair_tag, id
    -- include: claim_rest
-- include: claim_one_answer

-- name: claim_any
-- `claim` from every queue except those in $1 (a worker of queues ["*"]).
WITH picked AS (
    SELECT id, limited FROM jobs
    WHERE state = 'queued' AND queue <> ALL($1::text[])
        -- include: claim_filter
    ORDER BY priority DESC, fair_tag, id
    -- include: claim_rest
-- include: claim_answer

-- name: claim_admit
-- `claim_queue` and `limit_start` in one statement, in its own transaction (one round trip
-- and one commit, where the claim in a transaction with its admission took four: BEGIN,
-- the claim, `limit_start`, COMMIT): for a busy worker of one queue whose last claim had
-- limited candidates and none refused lately (the driver's `_probing`), so its candidates
-- are picked without the limit probe. Picked candidates are locked once, here; the limited
-- ones take their slots as in `limit_start` (`slots_given`), and start with the unlimited
-- ones. Not `fast` (a candidate under a rate, several limits or an undefined one): no
-- limited candidate starts or gets a slot; their ids come back in `waiting` and the driver
-- admits them in a transaction of its own (`limit_demands` .. `limit_admit`), which locks
-- and checks them again. `limited`: how many limited candidates were picked.
WITH picked AS (
    SELECT id, limited FROM jobs
    WHERE state = 'queued' AND queue = $1::text
        -- include: unpaused
    ORDER BY priority DESC, fair_tag, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
-- include: admitting
-- include: admitting_answer
LEFT JOIN claimed AS c ON true

-- name: claim_one_admit
-- `claim_admit` in a transaction begun by `claim_begin_generic` (an armed claim, or one
-- told early: the worker was idle), on its generic plan: `claim_one_unprobed`'s candidates
-- and `limit_start`'s admission in one statement, where they were two, each locking the
-- candidates. Not `fast`: the driver admits the candidates in the same transaction, on
-- the usual plans again (`usual`).
WITH picked AS (
    SELECT id, limited FROM jobs
    WHERE state = 'queued' AND queue >= $1::text AND queue <= $1::text
        -- include: unpaused
    ORDER BY queue, priority DESC, fair_tag, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
-- include: admitting
-- include: usual_plans
-- include: admitting_answer
CROSS JOIN usual LEFT JOIN claimed AS c ON true

-- name: claim_begin_generic
-- The BEGIN of a transaction for a `claim_one`: an armed claim's (`arm_claim`, sent while
-- the worker is idle), or a busy claim's that needs a transaction anyway (told early, or
-- after limited candidates); one simple-query message. For this transaction only, the
-- prepared claim runs its cached generic plan instead of being planned again: asyncpg's
-- statement cache prepares it once per connection, and the plan cache never settles on a
-- generic plan for it by itself (its `LIMIT $2` is costed at a tenth of the rows, so each
-- custom plan looks cheaper). Planning was ~0.35-0.5 ms of each claim (docs/design.md
-- "Idle latency").
BEGIN;
-- include: claim_generic

-- fragment: claim_generic
-- The generic claim transaction's plan settings (`claim_begin_generic`). Sorting is off, so
-- that the generic plan, made once and cached, is the ordered scan of ix_jobs_claim
-- whatever the statistics: with them taken while nothing was queued (an idle system's,
-- after a drain), it read ix_jobs_owner_waiting instead (every queued, scheduled and
-- retrying row of every queue and owner) and sorted what it found: 0.38 ms for 301
-- queued jobs per wake-up claim, and without bound for a backlog of scheduled jobs
-- (tests/store/test_claim_plans.py). Sequential scans are off for the same reason: a
-- generic plan made while the table was nearly empty (a fresh deployment's idle workers)
-- took the UPDATE's rows by reading the whole table, and kept doing so as it grew (a
-- 10,000-step workflow submitted to idle workers drained 0.35 s slower, each claim of 64
-- reading every row).
SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_sort = off;
SET LOCAL enable_seqscan = off; SET LOCAL jit = off

-- name: claim_plan_default
-- An armed generic transaction (`claim_begin_generic`) taken by another claim than a
-- `claim_one` (another worker sharing the driver): its plans are chosen as usual again.
-- One round trip, on that rare path only (`claim_one` resets the same settings itself as
-- it runs, for the admission of its limited candidates).
SET LOCAL plan_cache_mode TO DEFAULT; SET LOCAL enable_sort TO DEFAULT;
SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL jit TO DEFAULT

-- name: record_limits
-- The job_limits rows ($1 job ids, $2 limit names, $3 keys) of newly inserted jobs, in the
-- enqueue's transaction (jobs without limits skip this; their `limited` flag came with
-- their insert).
INSERT INTO job_limits (job_id, name, key)
SELECT t.job_id, t.name, t.key FROM unnest($1::text[], $2::text[], $3::text[]) AS t(job_id, name, key)

-- fragment: admitted_started
-- The end of the UPDATE that starts admitted jobs (`limit_start`, `limit_admit`: $3 now,
-- $5-$7 the started event): the claimed rows and their events.
    -- include: started_columns
),
logged AS (
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
        created_at)
    SELECT txid_current(), $5::text, c.id, c.owner_id, c.queue, c.type, $6::text, c.attempt,
        $7::jsonb, $3
    FROM claimed AS c
)

-- fragment: slots_given
-- The fast admission's slots (`limit_start`, `claim_admit`), from `found` (each limited
-- candidate's limits, with `ord`: its place in claim order, and `size`): for each key its
-- candidates in claim order take its lowest free slots (`given`, by address), then new
-- slots above its highest (`made`); `held` the free slots taken, only while still free.
-- Nothing is written unless `fast`.
keys AS (
    SELECT name, key, min(size) AS size, count(*) AS need,
        array_agg(job_id ORDER BY ord) AS jobs
    FROM found GROUP BY name, key
),
fast AS (
    SELECT (SELECT count(*) FROM found) = (SELECT count(DISTINCT job_id) FROM found)
        AND NOT EXISTS (SELECT 1 FROM found WHERE kind IS DISTINCT FROM 'concurrency'
            OR size IS NULL) AS ok
),
free AS (
    SELECT k.name, k.key, k.jobs, ARRAY(
            SELECT s.ctid FROM limit_slots AS s
            WHERE s.name = k.name AND s.key = k.key AND s.slot <= k.size AND s.job_id IS NULL
            ORDER BY s.slot LIMIT k.need
            FOR UPDATE SKIP LOCKED) AS ats,
        ARRAY(SELECT generate_series(m.top + 1, least(k.size, m.top + k.need))) AS news
    FROM keys AS k
    CROSS JOIN LATERAL (SELECT coalesce(max(s.slot), 0) AS top FROM limit_slots AS s
        WHERE s.name = k.name AND s.key = k.key) AS m
    WHERE (SELECT ok FROM fast)
),
given AS (
    SELECT g.job_id, g.at
    FROM free CROSS JOIN LATERAL unnest(free.jobs[:cardinality(free.ats)], free.ats)
        AS g(job_id, at)
    WHERE g.job_id IS NOT NULL
),
made AS (
    INSERT INTO limit_slots (name, key, slot, job_id)
    SELECT free.name, free.key, m.slot, m.job_id
    FROM free CROSS JOIN LATERAL unnest(free.jobs[cardinality(free.ats) + 1:], free.news)
        AS m(job_id, slot)
    WHERE m.job_id IS NOT NULL AND m.slot IS NOT NULL
    ORDER BY free.name, free.key, m.slot
    ON CONFLICT DO NOTHING
    RETURNING limit_slots.job_id
),
given_at AS (
    SELECT array_agg(at) AS ats, array_agg(job_id) AS jobs FROM given
),
held AS (
    UPDATE limit_slots AS s
    SET job_id = ((SELECT jobs FROM given_at))[array_position((SELECT ats FROM given_at), s.ctid)]
    WHERE s.ctid = ANY(ARRAY(SELECT at FROM given)) AND coalesce(s.job_id, '') = ''
    RETURNING s.job_id
),

-- fragment: limit_size
-- The fast admission's `found` (`admitting`, `limit_start`): a candidate's limit's size (the
-- running quota's: its key's user's own cap, else the default), and the candidates'
-- limits, read by primary key, one probe each.
        coalesce((SELECT u.max_running FROM users AS u
            WHERE jl.name = 'quota.running' AND u.id = jl.key AND u.max_running > 0),
            fl.max_running) AS size
    FROM mine CROSS JOIN LATERAL (
        SELECT * FROM job_limits AS jl WHERE jl.job_id = mine.id OFFSET 0) AS jl

-- fragment: admitting
-- What `claim_admit` and `claim_one_admit` do after picking their candidates (`picked`,
-- claim order): the limited ones (`mine`, numbered in that order) take slots as in
-- `limit_start` (`slots_given`), and start with the unlimited ones, with their events.
mine AS (
    SELECT id, row_number() OVER () AS ord FROM picked WHERE limited
),
found AS (
    SELECT jl.job_id, jl.name, jl.key, fl.kind, mine.ord,
        -- include: limit_size
    LEFT JOIN LATERAL (
        SELECT fl.kind, fl.max_running FROM flow_limits AS fl WHERE fl.name = jl.name OFFSET 0
    ) AS fl ON true
),
-- include: slots_given
claimed AS (
    UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, worker_id = $3,
        started_at = $4, lease_expires_at = $5
    WHERE jobs.id = ANY(ARRAY(SELECT id FROM picked WHERE NOT limited
        UNION ALL SELECT job_id FROM held UNION ALL SELECT job_id FROM made))
    -- include: started_columns
),
-- include: claim_logged

-- fragment: admitting_answer
-- The answer of `claim_admit` and `claim_one_admit`: the started jobs, each with whether
-- the admission was `fast`, the limits of the candidates it refused, the slots it made,
-- the candidates left for the general admission (`waiting`: when not fast) and how many
-- limited candidates were picked; one row, its job columns NULL, when none started.
SELECT c.*, fast.ok AS fast, refused.names AS refused, (SELECT count(*) FROM made) AS made,
    w.waiting, (SELECT count(*) FROM mine) AS limited
FROM fast
CROSS JOIN (SELECT array_agg(f.name) AS names FROM found AS f
    WHERE NOT EXISTS (SELECT 1 FROM claimed AS c WHERE c.id = f.job_id)) AS refused
CROSS JOIN (SELECT array_agg(id) AS waiting FROM mine WHERE NOT (SELECT ok FROM fast)) AS w

-- name: limit_start
-- The admission in one statement, for the common case (docs/flow-control.md,
-- "Performance"): the limited candidates $1 (claim order) still queued are locked (SKIP
-- LOCKED, as in `limit_demands`); if each is under exactly one limit, a concurrency limit
-- with a size (`fast`), the r-th of a key's candidates in claim order takes the key's r-th
-- lowest free slot 1..size, locked (SKIP LOCKED), or else the next slot above the key's
-- highest, made for it already held (ON CONFLICT DO NOTHING: a claim making the same slot
-- meanwhile keeps it, and this job waits): what `admission.plan` gives such jobs. A free
-- slot is taken by the address of the row version it locked (a TID scan, whatever the
-- statistics of a table the drain has just filled) and only while still free, which the
-- condition spells so that no index on job_id can serve it. Only a job that got its slot
-- starts ($2 worker, $3 now, $4 lease end, $5-$7 its event), in this statement's
-- transaction. `fast` false (one row, no job): nothing was written, and the driver admits
-- the candidates with `limit_demands` .. `limit_admit`. `refused`: the limit of each
-- locked candidate left queued; `made`: the slots it made. The candidates' limits are
-- read by primary key, one probe each (LATERAL ... OFFSET 0): joined, the planner took the
-- few locked candidates for fewer still and hashed the whole of job_limits (a sequential
-- scan of every queued limited job's rows per admission: 4.3-12 ms instead of 3.1-3.4 for
-- 64 candidates at 6,000 queued, EXPLAIN ANALYZE). The candidates are found by primary
-- key only: their state is spelled `IS NOT DISTINCT FROM 'queued'` (as in `lock_mine`), so
-- no partial index on state can serve it; spelled `=`, in a table never analyzed, the
-- planner ANDed the bitmaps of ix_jobs_claim_any and ix_jobs_owner_waiting, every queued
-- job of every queue (23,000 entries each, twice per admission: 58 ms instead of ~3).
WITH mine AS (
    SELECT id FROM jobs
    WHERE jobs.id = ANY($1::text[]) AND state IS NOT DISTINCT FROM 'queued' AND limited
    ORDER BY id FOR UPDATE SKIP LOCKED
),
found AS (
    SELECT jl.job_id, jl.name, jl.key, fl.kind, o.ord,
        -- include: limit_size
    JOIN unnest($1::text[]) WITH ORDINALITY AS o(id, ord) ON o.id = mine.id
    LEFT JOIN flow_limits AS fl ON fl.name = jl.name
),
-- include: slots_given
claimed AS (
    UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, worker_id = $2,
        started_at = $3, lease_expires_at = $4
    WHERE jobs.id = ANY(ARRAY(SELECT job_id FROM held UNION ALL SELECT job_id FROM made))
        AND jobs.state IS NOT DISTINCT FROM 'queued'
    -- include: admitted_started
SELECT c.*, fast.ok AS fast, refused.names AS refused, (SELECT count(*) FROM made) AS made
FROM fast
CROSS JOIN (SELECT array_agg(f.name) AS names FROM found AS f
    WHERE NOT EXISTS (SELECT 1 FROM claimed AS c WHERE c.id = f.job_id)) AS refused
LEFT JOIN claimed AS c ON true

-- name: limit_slots_analyze
-- Fresh statistics for limit_slots once claims have made many slots (the driver's
-- `_note_made`): plans cached while the table was nearly empty scan it whole for each
-- slot (the claim's probe, `limit_start`, the release trigger); an ANALYZE replans them.
ANALYZE limit_slots

-- name: limit_demands
-- The limits of the candidates $1 still queued, each candidate locked (SKIP LOCKED: one
-- another claim holds is its), with each limit's definition (NULL: not defined yet). The
-- size of the running quota's key is its user's own cap, else the default (NULL: no cap).
-- The same statement makes what the keys lack: slots 1..size of each concurrency key and a
-- full token bucket (at $2) of each rate key, in one global order (two claims making the
-- same rows wait for each other in that order, never in a cycle). Candidates and limits by
-- primary key, as in `limit_start`.
WITH mine AS (
    SELECT id FROM jobs
    WHERE jobs.id = ANY($1::text[]) AND state IS NOT DISTINCT FROM 'queued' AND limited
    ORDER BY id FOR UPDATE SKIP LOCKED
),
found AS (
    SELECT jl.job_id, jl.name, jl.key, fl.kind,
        coalesce((SELECT u.max_running FROM users AS u
            WHERE jl.name = 'quota.running' AND u.id = jl.key AND u.max_running > 0),
            fl.max_running) AS max_running,
        fl.rate_limit, fl.per_s, fl.burst
    FROM mine CROSS JOIN LATERAL (
        SELECT * FROM job_limits AS jl WHERE jl.job_id = mine.id OFFSET 0) AS jl
    LEFT JOIN flow_limits AS fl ON fl.name = jl.name
),
made AS (
    INSERT INTO limit_slots (name, key, slot)
    SELECT d.name, d.key, g.slot
    FROM (SELECT DISTINCT name, key, max_running FROM found
        WHERE kind = 'concurrency' AND max_running IS NOT NULL) AS d
    CROSS JOIN LATERAL generate_series(coalesce((SELECT max(s.slot) FROM limit_slots AS s
        WHERE s.name = d.name AND s.key = d.key), 0) + 1, d.max_running) AS g(slot)
    ORDER BY d.name, d.key, g.slot
    ON CONFLICT DO NOTHING
    RETURNING limit_slots.slot
),
filled AS (
    INSERT INTO rate_buckets (name, key, tokens, refreshed_at)
    SELECT DISTINCT ON (name, key) name, key, coalesce(burst, rate_limit)::float8, $2
    FROM found WHERE kind = 'rate'
    ORDER BY name, key
    ON CONFLICT DO NOTHING
    RETURNING rate_buckets.key
)
SELECT f.*, (SELECT count(*) FROM made) AS made, (SELECT count(*) FROM filled) AS filled
FROM found AS f

-- name: limit_slots_free
-- Up to $4 free slots numbered at most $3 of each (limit $1, key $2), locked: a slot another
-- claim is taking is skipped, and its UPDATE re-checks `job_id IS NULL` on the newest row
-- version, so no slot is ever given twice (the guarantee: docs/flow-control.md).
SELECT f.name, f.key, f.slot
FROM unnest($1::text[], $2::text[], $3::int[], $4::int[]) AS d(name, key, n, need)
CROSS JOIN LATERAL (
    SELECT s.name, s.key, s.slot FROM limit_slots AS s
    WHERE s.name = d.name AND s.key = d.key AND s.slot <= d.n AND s.job_id IS NULL
    ORDER BY s.slot LIMIT d.need
    FOR UPDATE SKIP LOCKED
) AS f

-- name: rate_buckets_lock
-- The buckets of (rate $1, key $2), locked in one global order: a claim waits for another
-- taking a token of the same key (a short wait, never a cycle).
SELECT b.name, b.key, b.tokens, b.refreshed_at FROM rate_buckets AS b
JOIN unnest($1::text[], $2::text[]) AS d(name, key) ON b.name = d.name AND b.key = d.key
ORDER BY b.name, b.key
FOR UPDATE OF b

-- name: limit_admit
-- The admitted jobs $1 start for worker $2 (now $3, lease end $4; events $5-$7), holding
-- slots ($8 limits, $9 keys, $10 slot numbers, $11 jobs) and spending tokens ($12 rates,
-- $13 keys, $14 tokens left, refreshed at $3): one statement, in the admission's transaction.
-- The jobs by primary key only (their state spelled as in `limit_start`).
WITH held AS (
    UPDATE limit_slots AS s SET job_id = h.job_id
    FROM unnest($8::text[], $9::text[], $10::int[], $11::text[]) AS h(name, key, slot, job_id)
    WHERE s.name = h.name AND s.key = h.key AND s.slot = h.slot AND s.job_id IS NULL
    RETURNING s.slot
),
spent AS (
    UPDATE rate_buckets AS b SET tokens = t.tokens, refreshed_at = $3
    FROM unnest($12::text[], $13::text[], $14::float8[]) AS t(name, key, tokens)
    WHERE b.name = t.name AND b.key = t.key
    RETURNING b.key
),
claimed AS (
    UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, worker_id = $2,
        started_at = $3, lease_expires_at = $4
    WHERE jobs.id = ANY($1::text[]) AND jobs.state IS NOT DISTINCT FROM 'queued'
    -- include: admitted_started
SELECT c.*, (SELECT count(*) FROM held) AS held, (SELECT count(*) FROM spent) AS spent
FROM claimed AS c

-- name: lock_mine
-- Worker $1's running rows among $2, locked in id order: a batch of several kinds is
-- several statements in one transaction, so it locks all its rows first (the lock-order
-- rule, store/locking.py). Found by primary key only; the fence is spelled
-- `(...) IS NOT DISTINCT FROM (...)` so that no index on state or worker_id can serve it
-- (see `complete`).
SELECT jobs.id FROM jobs
WHERE jobs.id = ANY($2::text[])
    AND (jobs.state, jobs.worker_id) IS NOT DISTINCT FROM ('running', $1::text)
ORDER BY jobs.id
FOR UPDATE

-- name: complete
-- Fenced finish of worker $1's jobs ($3 ids, $4 attempts) as completed with results $5.
-- $2: now; $6: each event's data; $7, $8: its type and state. Linear in the batch, each
-- row found by primary key whatever the statistics: `locked` walks the batch in id order
-- and takes each row by its key (LATERAL: one index probe per outcome; OFFSET 0 keeps the
-- fence out of that probe, where an index on state could serve it instead), locking it there, so rows are locked in id order (the lock-order
-- rule, store/locking.py); the fence is checked on the row as locked. The UPDATE finds
-- the rows again by key and re-checks that each is still the one `locked` checked (join
-- conditions against its values, so no index on state or worker_id can be chosen).
-- Before, statistics taken before the claims (no running row, worker_id all NULL) led
-- the planner to rescan every running row of the worker for each outcome (500 outcomes,
-- 3,000 running rows: 460 ms; now 500 probes, 12-20 ms with the events).
WITH locked AS (
    SELECT j.id, j.state, j.worker_id, j.attempt, v.result, v.data
    FROM (SELECT * FROM unnest($3::text[], $4::int[], $5::text[], $6::text[])
        AS u(id, attempt, result, data) ORDER BY u.id) AS v
    CROSS JOIN LATERAL (
        SELECT id, state, worker_id, attempt FROM jobs WHERE jobs.id = v.id OFFSET 0 FOR UPDATE
    ) AS j
    WHERE j.state = 'running' AND j.worker_id = $1 AND j.attempt = v.attempt
),
changed AS (
    UPDATE jobs SET state = 'completed', result = l.result::jsonb, progress = 100,
        finished_at = $2, lease_expires_at = NULL
    FROM locked AS l
    WHERE jobs.id = l.id AND jobs.state = l.state AND jobs.worker_id = l.worker_id
        AND jobs.attempt = l.attempt
    RETURNING jobs.id, jobs.owner_id, jobs.queue, jobs.type, jobs.attempt, l.data
),
logged AS (
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
        created_at)
    SELECT txid_current(), $7::text, c.id, c.owner_id, c.queue, c.type, $8::text, c.attempt,
        c.data::jsonb, $2
    FROM changed AS c
)
SELECT id FROM changed

-- name: retry
-- Fenced finish as retrying: errors $5 appended, run again at $6 (its fair tag: that time,
-- due-time order). $7-$9: the events.
-- Found, locked and fenced as in `complete`.
WITH locked AS (
    SELECT j.id, j.state, j.worker_id, j.attempt, v.error, v.run_at, v.data
    FROM (SELECT * FROM unnest($3::text[], $4::int[], $5::text[], $6::timestamptz[], $7::text[])
        AS u(id, attempt, error, run_at, data) ORDER BY u.id) AS v
    CROSS JOIN LATERAL (
        SELECT id, state, worker_id, attempt FROM jobs WHERE jobs.id = v.id OFFSET 0 FOR UPDATE
    ) AS j
    WHERE j.state = 'running' AND j.worker_id = $1 AND j.attempt = v.attempt
),
changed AS (
    UPDATE jobs SET state = 'retrying', run_at = l.run_at,
        fair_tag = extract(epoch FROM l.run_at),
        errors = jobs.errors || jsonb_build_array(l.error::jsonb),
        worker_id = NULL, lease_expires_at = NULL
    FROM locked AS l
    WHERE jobs.id = l.id AND jobs.state = l.state AND jobs.worker_id = l.worker_id
        AND jobs.attempt = l.attempt
    RETURNING jobs.id, jobs.owner_id, jobs.queue, jobs.type, jobs.attempt, l.data
),
logged AS (
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
        created_at)
    SELECT txid_current(), $8::text, c.id, c.owner_id, c.queue, c.type, $9::text, c.attempt,
        c.data::jsonb, $2
    FROM changed AS c
)
SELECT id FROM changed

-- name: fail
-- Fenced finish as failed: errors $5 appended, what it did finish ($6) kept as its result.
-- $7-$9: the events. Found, locked and fenced as in `complete`.
WITH locked AS (
    SELECT j.id, j.state, j.worker_id, j.attempt, v.error, v.result, v.data
    FROM (SELECT * FROM unnest($3::text[], $4::int[], $5::text[], $6::text[], $7::text[])
        AS u(id, attempt, error, result, data) ORDER BY u.id) AS v
    CROSS JOIN LATERAL (
        SELECT id, state, worker_id, attempt FROM jobs WHERE jobs.id = v.id OFFSET 0 FOR UPDATE
    ) AS j
    WHERE j.state = 'running' AND j.worker_id = $1 AND j.attempt = v.attempt
),
changed AS (
    UPDATE jobs SET state = 'failed', finished_at = $2, lease_expires_at = NULL,
        errors = jobs.errors || jsonb_build_array(l.error::jsonb), result = l.result::jsonb
    FROM locked AS l
    WHERE jobs.id = l.id AND jobs.state = l.state AND jobs.worker_id = l.worker_id
        AND jobs.attempt = l.attempt
    RETURNING jobs.id, jobs.owner_id, jobs.queue, jobs.type, jobs.attempt, l.data
),
logged AS (
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
        created_at)
    SELECT txid_current(), $8::text, c.id, c.owner_id, c.queue, c.type, $9::text, c.attempt,
        c.data::jsonb, $2
    FROM changed AS c
)
SELECT id FROM changed

-- name: rescue
-- Up to $3 running jobs whose lease ended before $1: queued again, or failed when their
-- attempts are spent, with a LeaseExpired error ($2: now as text) appended; requeued in
-- due-time order (its tag: its run_at's epoch), as before fair dispatch.
WITH expired AS (
    SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < $1
    ORDER BY lease_expires_at LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET
    state = CASE WHEN jobs.attempt < jobs.max_attempts THEN 'queued' ELSE 'failed' END,
    finished_at = CASE WHEN jobs.attempt < jobs.max_attempts THEN NULL ELSE $1 END,
    errors = jobs.errors || jsonb_build_array(jsonb_build_object(
        'attempt', jobs.attempt, 'at', $2::text, 'type', 'LeaseExpired',
        'message', 'the worker running this job stopped heartbeating',
        'worker_id', jobs.worker_id)),
    worker_id = NULL, lease_expires_at = NULL,
    fair_tag = extract(epoch FROM jobs.run_at)
FROM expired WHERE jobs.id = expired.id
RETURNING jobs.id, jobs.state, jobs.queue, jobs.owner_id, jobs.type, jobs.attempt

-- name: progress
-- A running job's progress ($5 percent, $6 message), fenced ($2 the job, $1 its worker, $3
-- the attempt), with its event ($7 type, $8 state, $9 data, $4 now), in one statement in its
-- own transaction: one round trip (the Core writer's BEGIN, UPDATE, event lock, INSERT and
-- COMMIT were five). The statement takes its lock on `events` before it runs, so its key is
-- this transaction's id (store/outbox.py's horizon), as `enqueue` keys its events. The
-- job's id if it was the worker's, no row otherwise. Found by primary key only: the fence
-- is spelled `(...) IS NOT DISTINCT FROM (...)`, as in `lock_mine`, so that no index on
-- state or worker_id can serve it, whatever plan the statement's cache settles on.
WITH moved AS (
    UPDATE jobs SET progress = $5::int, progress_message = $6::text
    WHERE jobs.id = $2::text
        AND (jobs.state, jobs.worker_id, jobs.attempt) IS NOT DISTINCT FROM
            ('running', $1::text, $3::int)
    RETURNING jobs.id, jobs.owner_id, jobs.queue, jobs.type, jobs.attempt
)
INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
    created_at)
SELECT txid_current(), $7::text, m.id, m.owner_id, m.queue, m.type, $8::text, m.attempt,
    $9::jsonb, $4::timestamptz
FROM moved AS m
RETURNING job_id

-- name: notify
-- A NOTIFY on channel $1, delivered when the transaction commits.
SELECT pg_notify($1, $2)

-- name: try_lead
-- Leadership: a session-level advisory lock, held until the session ends. Only on a server
-- that takes writes (NULL otherwise, and the lock is not taken): a standby grants advisory
-- locks too, and a leader there would write nothing (around a failover the address may
-- lead to one for a while). CASE, not AND: it decides the order of evaluation.
SELECT CASE WHEN current_setting('transaction_read_only') = 'on' THEN NULL
    ELSE pg_try_advisory_lock($1) END

-- name: lead_ping
-- The leader's keepalive: still connected means the lock is still held; false when the
-- server no longer takes writes (the leader then leaves that session).
SELECT current_setting('transaction_read_only') = 'off'

-- name: unlead
SELECT pg_advisory_unlock($1)

-- name: ping
-- The keepalive of a dedicated session (LISTEN, leadership): still connected, still held.
SELECT 1

-- name: backend_pid
-- Which server session answers: the same one every time on a dedicated connection, unless
-- a pooler in transaction mode stands between (drivers/pg_sessions.py `own_session`).
SELECT pg_backend_pid()

-- name: horizon
-- The outbox's read horizon (store/outbox.py, docs/events.md "Reading in commit order"):
-- every event below it has committed, and none can still commit below it. It is the
-- statement snapshot's xmax, lowered to the oldest running transaction that may write
-- events: one that holds a lock on `events` in ROW EXCLUSIVE mode or stronger. Each
-- statement that inserts events takes that lock before it runs, so before it writes; a
-- transaction that wrote before it writes events takes it first (`lock_events`). So a
-- running transaction whose own transaction-id lock is held by a transaction without it
-- (other databases' transactions, and ours that write no events) holds nothing back; one
-- whose lock is not in the view yet holds it back while it is still running (it was just
-- assigned), not once it has ended (`pg_xact_status`: its events, if any, are seen by the
-- reader's later statement). Kept after it ended, a neighbour's transaction gone from the
-- lock table between the snapshot and its read lowered the answer below an earlier one,
-- about once in 2,500 beside another database's short writes: a reader found an event,
-- then not (tests/store/test_outbox.py).
-- pg_locks is read once: the transaction-id locks and the locks on `events` come from
-- one pass over the lock table. The caller reads events in a later statement, whose
-- snapshot sees every transaction this one found gone. A transaction id in the snapshot
-- is 64 bits (epoch and xid); the lock's is the low 32.
WITH snap AS (SELECT pg_current_snapshot() AS s),
locks AS MATERIALIZED (
    SELECT locktype, transactionid, virtualtransaction FROM pg_locks
    WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' AND granted
        OR locktype = 'relation' AND relation = 'events'::regclass
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND mode <> 'AccessShareLock'
),
bystanders AS (
    SELECT own.transactionid::text::bigint AS xid32 FROM locks AS own
    WHERE own.locktype = 'transactionid' AND NOT EXISTS (
        SELECT 1 FROM locks AS writing
        WHERE writing.locktype = 'relation'
            AND writing.virtualtransaction = own.virtualtransaction)
),
-- Materialized: a transaction's status is asked only after the lock table was read (a row
-- leaves `kept` once the bystanders are known), so one that ends between the two is seen
-- ended, not running without its lock.
kept AS MATERIALIZED (
    SELECT x FROM snap, pg_snapshot_xip(snap.s) AS x
    WHERE x::text::bigint % 4294967296 NOT IN (SELECT xid32 FROM bystanders)
)
SELECT least(
    (SELECT pg_snapshot_xmax(s)::text::bigint FROM snap),
    (SELECT min(x::text::bigint) FROM kept WHERE pg_xact_status(x) = 'in progress')
)

-- name: lock_events
-- Marks this transaction as one that writes events, for `horizon`, until it ends. Taken
-- before its events are written when it wrote something else first (the Core writers),
-- or before its first write when its events are keyed by its transaction id (a caller's
-- transaction that enqueues, a finish of several statements). ROW EXCLUSIVE is what an
-- INSERT takes: it waits for nothing an INSERT would not wait for.
LOCK TABLE events IN ROW EXCLUSIVE MODE

-- name: caller_savepoint
-- A library batch with keys (store/foreign.py): its other jobs are inserted before a
-- reused key is found, so the batch runs under a savepoint of its own in the caller's
-- transaction, taken back when it is refused (the caller's own writes stay).
SAVEPOINT conveyor_enqueue

-- name: caller_savepoint_undo
ROLLBACK TO SAVEPOINT conveyor_enqueue

-- name: caller_savepoint_done
RELEASE SAVEPOINT conveyor_enqueue

-- name: rekey_events
-- A library caller's transaction (store/foreign.py) may have written before it enqueued:
-- its transaction id was then assigned before its `enqueue` statement took the events lock,
-- and a reader may have passed it meanwhile. The `created` events ($2) of the jobs it just
-- inserted ($1) take the key the Core writers give theirs (the driver's `xid()`: at least
-- the xmax of a snapshot taken after the lock, which `enqueue` holds until the transaction
-- ends), and other processes' event readers ($3: their channel) are woken when it commits.
WITH rekeyed AS (
    UPDATE events
    SET xid = greatest(txid_current(), pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
    WHERE job_id = ANY($1::text[]) AND type = $2::text
    RETURNING 1
)
SELECT pg_notify($3::text, ''), (SELECT count(*) FROM rekeyed) AS rekeyed

-- name: schema_enter
-- A library caller's transaction (store/foreign.py) when Conveyor's tables live in schema
-- $1 (CONVEYOR_DATABASE_SCHEMA): the schema goes first on its search_path, for this
-- transaction only, so that the named statements (and the triggers they fire) find
-- Conveyor's tables; `schema_leave` then puts back the search_path returned here, and the
-- caller's own statements find theirs as before.
SELECT current_setting('search_path'),
    set_config('search_path', $1::text || ', ' || current_setting('search_path'), true)

-- name: schema_leave
-- The caller's search_path back ($1, from `schema_enter`), for the rest of the transaction.
SELECT set_config('search_path', $1::text, true)

-- name: workflow_insert
-- A workflow's row (scheduler/workflow_rows.py builds it): $1 id, $2 owner, $3 name,
-- $4 state, $5 created_at (and updated_at), $6 the workflow's failure policy, $7 its
-- idempotency key (NULL: none), $8 its declaration's fingerprint. A key the owner stored
-- already (or a racing submit of it, which ON CONFLICT waits for) inserts nothing and
-- returns no row: `workflow_keyed` then reads the stored one.
INSERT INTO workflows (id, owner_id, name, state, created_at, updated_at, settled_at,
    on_dependency_failure, idempotency_key, fingerprint)
VALUES ($1::text, $2::text, $3::text, $4::text, $5::timestamptz, $5::timestamptz, NULL,
    $6::text, $7::text, $8::text)
ON CONFLICT DO NOTHING
RETURNING id

-- name: workflow_keyed
-- The stored workflow that an owner's ($1) idempotency key ($2) names, with its
-- declaration's fingerprint (the same declaration again, or another one reusing the key?).
SELECT id, fingerprint FROM workflows WHERE owner_id = $1::text AND idempotency_key = $2::text

-- name: workflow_steps
-- A workflow's steps as jobs rows, their 'created' events ($20: the type) and one NOTIFY
-- per queue that got a runnable (queued) step, in one statement whatever the width: column
-- arrays as `enqueue`'s (a NOT NULL one may come as its one value), $13 the shared created_at, $15 the workflow, $23 each step's fair
-- key (its job type's; NULL: fair dispatch off). A queued step with a key gets its fair tag
-- as `enqueue` gives a ready job (docs/flow-control.md "Fair dispatch": max(V, L) + r / w,
-- one read of each index per (queue, priority, key) of the workflow; an empty band: its
-- run_at + r / w); every other step takes $16 (its run_at's epoch: a waiting step gets its
-- tag at release, from migration 0020's trigger). No unique key, no idempotency key (a
-- step's, wf:<workflow>:<step>, is derived where read), so nothing conflicts. A step stored
-- waiting is one with dependencies (`depends`, migration 0028).
-- The transaction took `lock_events` before its first write, so the events' key is the
-- driver's `xid()` (at least the xmax of this statement's snapshot, taken after the lock),
-- as the Core writers key theirs. A workflow always has a queued step (a root), so its
-- NOTIFY on the jobs channel also wakes other processes' event readers.
WITH a AS (
    -- include: batch_columns
        coalesce(x.tags, ($12::text[])[1]) AS tags, x.schedule_id,
        coalesce(x.fair_tag, ($16::float8[])[1]) AS fair_tag,
        coalesce(x.limited, ($17::bool[])[1]) AS limited, x.trace_context, x.step,
        x.on_dependency_failure, x.ready_at, x.fair_key, x.n
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
        $7::text[], $8::int[], $9::timestamptz[], $10::float8[], $11::text[], $12::text[],
        $14::text[], $16::float8[], $17::bool[], $18::text[], $19::text[], $21::text[],
        $22::timestamptz[], $23::text[])
        WITH ORDINALITY AS x(id, owner_id, queue, type, payload, priority, state, max_attempts,
            run_at, timeout_s, idempotency_key, tags, schedule_id, fair_tag, limited,
            trace_context, step, on_dependency_failure, ready_at, fair_key, n)
),
u AS (
    SELECT a.*, CASE WHEN a.fair_key IS NOT NULL AND a.state = 'queued' THEN row_number()
        OVER (PARTITION BY a.queue, a.priority, a.fair_key, a.state ORDER BY a.n) END AS r
    FROM a
),
heads AS (
    SELECT g.queue, g.priority, g.fair_key,
        (SELECT j.fair_tag FROM jobs AS j
            WHERE j.state = 'queued' AND j.queue = g.queue AND j.priority = g.priority
            ORDER BY j.queue, j.priority DESC, j.fair_tag LIMIT 1) AS v,
        (SELECT max(j.fair_tag) FROM jobs AS j
            WHERE j.state = 'queued' AND j.queue = g.queue AND j.priority = g.priority
                AND j.fair_key = g.fair_key AND j.fair_key IS NOT NULL) AS l,
        coalesce((SELECT w.fair_weight FROM users AS w
            WHERE w.id = g.fair_key AND g.owner_id = g.fair_key AND w.fair_weight > 0), 1)
            AS w
    FROM (SELECT u.queue, u.priority, u.fair_key, min(u.owner_id) AS owner_id FROM u
        WHERE u.r IS NOT NULL GROUP BY u.queue, u.priority, u.fair_key) AS g
),
inserted AS (
    INSERT INTO jobs (id, owner_id, queue, type, payload, priority, state, attempt,
        max_attempts, run_at, timeout_s, idempotency_key, progress, errors, tags,
        schedule_id, created_at, fair_key, fair_tag, limited, trace_context, workflow_id,
        step, on_dependency_failure, ready_at, dep_checks, depends)
    SELECT u.id, u.owner_id, u.queue, u.type, u.payload::jsonb, u.priority, u.state, 0,
        u.max_attempts, u.run_at, u.timeout_s, u.idempotency_key, 0, '[]'::jsonb,
        u.tags::jsonb, u.schedule_id, $13::timestamptz, u.fair_key,
        CASE WHEN u.r IS NULL THEN u.fair_tag
            ELSE greatest(h.v, h.l, CASE WHEN h.v IS NULL THEN u.fair_tag END) + u.r / h.w
            END,
        u.limited, u.trace_context, $15::text, u.step, u.on_dependency_failure, u.ready_at, 0,
        u.state = 'waiting'
    FROM u LEFT JOIN heads AS h
        ON h.queue = u.queue AND h.priority = u.priority AND h.fair_key = u.fair_key
    ORDER BY u.n
    RETURNING id, queue, state, owner_id, type
),
logged AS (
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt,
        data, created_at)
    SELECT greatest(txid_current(), pg_snapshot_xmax(pg_current_snapshot())::text::bigint),
        $20::text, id, owner_id, queue, type, state, 0, NULL, $13::timestamptz
    FROM inserted
),
woken AS (
    SELECT pg_notify('conveyor_jobs', queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'queued') AS q
)
SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM woken) AS woken

-- name: workflow_edges
-- A workflow's ($3) dependency edges: step $1[i] waits for step $2[i]; either array may be
-- one value that every edge shares (a join's edges name one job, a fan-out's one dependency).
INSERT INTO job_dependencies (job_id, depends_on, workflow_id)
SELECT coalesce(e.job_id, ($1::text[])[1]), coalesce(e.depends_on, ($2::text[])[1]), $3::text
FROM unnest($1::text[], $2::text[]) AS e(job_id, depends_on)
