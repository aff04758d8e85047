-- SQLite: every hand-written statement of the queue, by name (store/sql/__init__.py).
-- Parameters are :named; batches come in as one JSON array read with json_each. Writers
-- take turns under BEGIN IMMEDIATE (store/database.py), so no statement needs a lock
-- order. SQLite has no data-modifying CTE: the events of a change are a second statement
-- in the same transaction, built from the rows the change returned (store/events.py).

-- name: enqueue
-- A submit's jobs in one statement whatever the batch, from :jobs, one JSON array per job in
-- the driver's `ENQUEUE_COLUMNS` order (`job_row`'s columns as stored: times as text, JSON
-- columns as their JSON text, and its fair tag). No conflict target: a taken idempotency
-- key (uq_jobs_idempotency) and a taken unique key (uq_jobs_unique) both skip the row,
-- never abort the statement; only the rows that went in return their id. One row per
-- execute, as the first version did, cost a 1,000-job submit 21 % (bench, session 18).
INSERT INTO jobs (id, owner_id, queue, type, payload, priority, state, attempt,
    max_attempts, run_at, lease_expires_at, worker_id, timeout_s, idempotency_key,
    progress, progress_message, result, errors, tags, schedule_id, created_at, started_at,
    finished_at, unique_key, unique_states, fair_key, fair_tag, limited, trace_context)
SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
    j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8, j.value ->> 9,
    j.value ->> 10, j.value ->> 11, j.value ->> 12, j.value ->> 13, j.value ->> 14,
    j.value ->> 15, j.value ->> 16, j.value ->> 17, j.value ->> 18, j.value ->> 19,
    j.value ->> 20, j.value ->> 21, j.value ->> 22, j.value ->> 23, j.value ->> 24,
    j.value ->> 25, j.value ->> 26, j.value ->> 27, j.value ->> 28
FROM json_each(:jobs) AS j WHERE true ORDER BY j.key
ON CONFLICT DO NOTHING
RETURNING id

-- name: job_callback
-- A submitted job's callback URL (`callback_rows`), in its enqueue's transaction.
INSERT INTO job_callbacks (job_id, owner_id, url, created_at)
VALUES (:job_id, :owner_id, :url, :created_at)

-- name: job_limit
-- A submitted job's key under one limit (`limit_rows`), in its enqueue's transaction.
INSERT INTO job_limits (job_id, name, key) VALUES (:job_id, :name, :key)

-- name: keyed_jobs
-- The stored jobs the idempotency keys of a submit's duplicates name, :keys [[owner, key],
-- ...], each found through uq_jobs_idempotency (CROSS JOIN: the keys drive the loop).
SELECT j.id, j.state, j.owner_id, j.idempotency_key, j.type, j.queue, j.payload
FROM json_each(:keys) AS k CROSS JOIN jobs AS j
WHERE j.owner_id = k.value ->> 0 AND j.idempotency_key = k.value ->> 1

-- name: unique_jobs
-- The live jobs (uq_jobs_unique's rows: the index's own predicate) the unique keys of a
-- submit's duplicates name, :keys [[owner, key], ...].
SELECT j.id, j.state, j.unique_key
FROM json_each(:keys) AS k CROSS JOIN jobs AS j
WHERE j.unique_key = k.value ->> 1 AND j.owner_id = k.value ->> 0
    AND j.unique_key IS NOT NULL AND instr(j.unique_states, ',' || j.state || ',') > 0

-- name: fair_heads
-- What a fair submit's tags start from (docs/flow-control.md "Fair dispatch"), for each
-- group of :groups ([[queue, priority, key, owned], ...]: the batch's jobs with a fair key,
-- by band and key): `heads`, its index i in :groups. Read in the insert's write
-- transaction: no other writer moves them meanwhile.
WITH g AS (
    SELECT key AS i, value ->> 0 AS queue, value ->> 1 AS priority, value ->> 2 AS fair_key,
        value ->> 3 AS owned
    FROM json_each(:groups)
)
SELECT g.i,
    -- include: heads
FROM g

-- fragment: heads
-- The columns of a group g (queue, priority, fair_key, owned) that its jobs' fair tags
-- start from: the band's head v (the first row of ix_jobs_claim), the key's last queued
-- tag l (the last row of ix_jobs_fair) and its weight w (the owner's fair_weight when the
-- key is the jobs' owner, `owned`, else 1).
    (SELECT j.fair_tag FROM jobs AS j
        WHERE j.state = 'queued' AND j.queue = g.queue AND j.priority = g.priority
        ORDER BY j.queue, j.priority DESC, j.fair_tag LIMIT 1) AS v,
    (SELECT j.fair_tag FROM jobs AS j
        WHERE j.state = 'queued' AND j.queue = g.queue AND j.priority = g.priority
            AND j.fair_key = g.fair_key AND j.fair_key IS NOT NULL
        ORDER BY j.fair_tag DESC LIMIT 1) AS l,
    coalesce((SELECT u.fair_weight FROM users AS u
        WHERE g.owned AND u.id = g.fair_key AND u.fair_weight > 0), 1) AS w

-- fragment: admissible
-- A claim's candidate filter (claim_one, claim_any): a limited job
-- only while each of its limits has a free slot or a token for its key at :now, so a full
-- key never holds the claim's LIMIT (head of line); `NOT limited` first: unlimited jobs
-- skip the probe.
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
                AND b.tokens + max(0, (julianday(:now) - julianday(b.refreshed_at))
                    * 86400.0) * fl.rate_limit / fl.per_s < 1))))

-- fragment: demands
-- What a claim's limited candidate asks (claim, claim_any: a column of their rows; NULL for
-- an unlimited one, which skips it): a JSON array of its limits, each [name, key, kind,
-- size, rate_limit, per_s, burst, top, free] with its definition (kind NULL: not defined
-- yet; the running quota's size is its user's own cap, else the default, NULL: no cap)
-- and, for a concurrency limit with a size, its key's slots read by primary key: `top`,
-- the highest slot the key has (0: none yet), and `free`, its free slots numbered at most
-- the size ("1,2", ascending; NULL: none). Read with the candidates, in the claim's write
-- transaction (one writer: still true when the driver's admission plans on it): the
-- limits and the slots were two more statements, each a round trip to aiosqlite's thread
-- while the write lock is held.
    CASE WHEN jobs.limited THEN (
        SELECT json_group_array(json_array(d.name, d.key, d.kind, d.size, d.rate_limit,
            d.per_s, d.burst,
            CASE WHEN d.kind = 'concurrency' AND d.size IS NOT NULL THEN coalesce((
                SELECT max(s.slot) FROM limit_slots AS s
                WHERE s.name = d.name AND s.key = d.key), 0) END,
            CASE WHEN d.kind = 'concurrency' AND d.size IS NOT NULL THEN (
                SELECT group_concat(f.slot) FROM (
                    SELECT s.slot FROM limit_slots AS s
                    WHERE s.name = d.name AND s.key = d.key AND s.slot <= d.size
                        AND +s.job_id IS NULL
                    ORDER BY s.slot) AS f) END))
        FROM (
            SELECT jl.name, jl.key, fl.kind, coalesce(u.max_running, fl.max_running) AS size,
                fl.rate_limit, fl.per_s, fl.burst
            FROM job_limits AS jl
            LEFT JOIN flow_limits AS fl ON fl.name = jl.name
            LEFT JOIN users AS u ON jl.name = 'quota.running' AND u.id = jl.key
                AND u.max_running > 0
            WHERE jl.job_id = jobs.id
        ) AS d
    ) END AS demands

-- fragment: claim_order
-- The end of a claim's inner query: paused queues skipped, the claim's order, unlimited
-- (`LIMIT -1`: see `claim_one`).
        AND NOT EXISTS (SELECT 1 FROM queue_pauses AS p WHERE p.queue = jobs.queue)
    ORDER BY priority DESC, fair_tag, id
    LIMIT -1

-- name: claim_one
-- The candidates of a claim from the one queue :queue: up to :limit queued jobs, highest
-- priority first, then by fair tag (due time when fair dispatch is off), none of a paused
-- queue; the driver starts the unlimited ones (`claim_start`) and admits the limited ones
-- in the same transaction from their `demands`. A per-row probe leaves out limited jobs
-- whose limits have no free slot or token now (head of line); unlimited jobs skip it. The
-- probe runs only on the rows the LIMIT reaches: the inner query orders the queued jobs
-- (its `LIMIT -1` keeps it a subquery, not flattened, and keeps its ORDER BY), the outer
-- one probes them in that order until :limit pass; it is named `jobs` for the fragment.
-- Probing every queued job before the sort, twice (the claim and a second list of the
-- limited candidates), cost 8 ms each at 6,000 queued. `queue =` makes ix_jobs_claim give
-- the claim's order for that queue as it stands, whatever the statistics: a database never
-- analyzed (Conveyor runs no ANALYZE on SQLite) took `queue IN (json_each)` from
-- ix_jobs_finished (state, finished_at) and sorted every queued job of the queue for each
-- claim: 4 ms a claim of 64 at 10,000 queued, against 0.05 (tests/store/
-- test_claim_plans.py). A worker of several queues runs it once per queue and keeps the
-- best :limit of them (the driver): the same jobs as one ordered read of all its queues.
-- `priority` and `fair_tag` are for that merge.
-- include: claim_one_rows
    -- include: admissible
LIMIT :limit

-- name: claim_one_unprobed
-- `claim_one` without the limit probe (`admissible`): limited candidates are picked whether
-- their keys have room or not, and the admission, which reads their slots in `demands`
-- anyway, refuses those without. For a worker whose limited claims have been refusing
-- nothing (the driver's `_probing`, as PostgreSQL's `claim_one_unprobed`): the probe read
-- each limited candidate's limits and counted its key's held slots a second time. After a
-- refusal the same trip picks the rest with the probe (`_Ask.rest`), and the next claims
-- probe.
-- include: claim_one_rows
LIMIT :limit

-- fragment: claim_one_rows
-- `claim_one` up to its probe.
SELECT jobs.id, jobs.limited, jobs.priority, jobs.fair_tag,
    -- include: demands
FROM (
    SELECT id, limited, priority, fair_tag FROM jobs
    WHERE state = 'queued' AND queue = :queue
    -- include: claim_order
) AS jobs
WHERE true

-- name: claim_any
-- `claim_one` from every queue except those in :queues (a worker of queues ["*"]): the
-- queued jobs in claim order are ix_jobs_claim_any's, named (INDEXED BY) so that no plan
-- reads them through ix_jobs_finished and sorts, as one made without statistics did.
-- include: claim_any_rows
    -- include: admissible
LIMIT :limit

-- name: claim_any_unprobed
-- `claim_any` without the limit probe (`claim_one_unprobed` says when and why).
-- include: claim_any_rows
LIMIT :limit

-- fragment: claim_any_rows
-- `claim_any` up to its probe.
SELECT jobs.id, jobs.limited,
    -- include: demands
FROM (
    SELECT id, limited FROM jobs INDEXED BY ix_jobs_claim_any
    WHERE state = 'queued' AND queue NOT IN (SELECT value FROM json_each(:queues))
    -- include: claim_order
) AS jobs
WHERE true

-- name: claim_start
-- Start the jobs :ids (a JSON array; picked by `claim_one` or `claim_any`, or admitted)
-- for :worker, by primary key. A workflow's step also returns its workflow, its name and whether it has
-- dependencies (postgres.sql `started_columns`).
UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = :worker,
    started_at = :now, lease_expires_at = :lease
WHERE id IN (SELECT value FROM json_each(:ids))
RETURNING jobs.id, jobs.type, jobs.queue, jobs.payload, jobs.attempt, jobs.max_attempts,
    jobs.timeout_s, jobs.priority, jobs.owner_id, jobs.idempotency_key, jobs.run_at,
    jobs.trace_context, jobs.workflow_id, jobs.step, jobs.depends

-- name: record_events
-- One event (executemany: each of a claim's started jobs), as `outbox.record`'s Core insert
-- writes it: xid 0 (one writer: commit order is id order), :data as JSON text.
INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
    created_at)
VALUES (0, :type, :job_id, :owner_id, :queue, :job_type, :state, :attempt, :data,
    :created_at)

-- name: rate_buckets_of
-- The stored token buckets of a claim's rates, :pairs [[limit, key], ...], by primary key.
SELECT b.name, b.key, b.tokens, b.refreshed_at
FROM json_each(:pairs) AS p CROSS JOIN rate_buckets AS b
WHERE b.name = p.value ->> 0 AND b.key = p.value ->> 1

-- name: rate_bucket_set
-- A rate's bucket as the claim's admission left it (executemany: one per rate it spent).
INSERT INTO rate_buckets (name, key, tokens, refreshed_at) VALUES (:name, :key, :tokens, :at)
ON CONFLICT (name, key) DO UPDATE SET tokens = excluded.tokens,
    refreshed_at = excluded.refreshed_at

-- name: progress
-- A running job's progress (:percent, :message), fenced (:job, its :worker, the :attempt),
-- in one trip with its event (`record_events`); the job's event columns if it was the
-- worker's, no row otherwise.
UPDATE jobs SET progress = :percent, progress_message = :message
WHERE id = :job AND worker_id = :worker AND attempt = :attempt AND state = 'running'
RETURNING id, owner_id, queue, type, attempt

-- name: heartbeat_worker
-- A worker's heartbeat (:worker, :now), with `heartbeat_leases` in one transaction.
UPDATE workers SET last_heartbeat_at = :now WHERE id = :worker

-- name: heartbeat_leases
-- The worker's running jobs' leases extended to :until; the ids it still holds.
UPDATE jobs SET lease_expires_at = :until
WHERE worker_id = :worker AND state = 'running'
RETURNING id

-- name: limit_slots_hold
-- The admitted jobs hold their slots (:holds: [[limit, key, slot, job], ...]): a slot the
-- key lacks is made held, an existing one taken only while free (one writer: the plan's
-- read of them in this transaction is still true). By primary key, the conflict target.
-- Making a key's slots as its jobs first need them, in this statement, spares the separate
-- insert of every missing slot (`limit_slots_make`, 1..size) a new key's claim ran.
INSERT INTO limit_slots (name, key, slot, job_id)
SELECT h.value ->> 0, h.value ->> 1, h.value ->> 2, h.value ->> 3
FROM json_each(:holds) AS h WHERE true
ON CONFLICT (name, key, slot) DO UPDATE SET job_id = excluded.job_id
WHERE limit_slots.job_id IS NULL

-- name: complete
-- Fenced finish of :worker's jobs as completed; :batch is [[id, attempt, result], ...].
-- Linear in the batch: each row is found by primary key. The unary `+` on the fence's
-- columns keeps their indexes out of the plan: without statistics (no ANALYZE) SQLite
-- otherwise took every running row of the worker from ix_jobs_worker and scanned the
-- batch for each (500 outcomes, 3,000 running rows: 514 ms; by primary key 3 ms).
WITH v AS (
    SELECT value ->> 0 AS id, value ->> 1 AS attempt, value -> 2 AS result
    FROM json_each(:batch)
)
UPDATE jobs SET state = 'completed', result = v.result, progress = 100,
    finished_at = :now, lease_expires_at = NULL
FROM v WHERE jobs.id = v.id AND +jobs.state = 'running' AND +jobs.worker_id = :worker
    AND +jobs.attempt = v.attempt
RETURNING jobs.id, jobs.owner_id, jobs.queue, jobs.type, jobs.attempt

-- name: retry
-- Fenced finish as retrying; :batch is [[id, attempt, error, run_at], ...]. By primary key,
-- as `complete`. Its fair tag: the new run_at's epoch (due-time order).
WITH v AS (
    SELECT value ->> 0 AS id, value ->> 1 AS attempt, value -> 2 AS error,
        value ->> 3 AS run_at
    FROM json_each(:batch)
)
UPDATE jobs SET state = 'retrying', run_at = v.run_at,
    fair_tag = (julianday(v.run_at) - 2440587.5) * 86400.0,
    errors = json_insert(jobs.errors, '$[#]', json(v.error)),
    worker_id = NULL, lease_expires_at = NULL
FROM v WHERE jobs.id = v.id AND +jobs.state = 'running' AND +jobs.worker_id = :worker
    AND +jobs.attempt = v.attempt
RETURNING jobs.id, jobs.owner_id, jobs.queue, jobs.type, jobs.attempt

-- name: fail
-- Fenced finish as failed; :batch is [[id, attempt, error, result], ...]. By primary key, as
-- `complete`.
WITH v AS (
    SELECT value ->> 0 AS id, value ->> 1 AS attempt, value -> 2 AS error,
        value -> 3 AS result
    FROM json_each(:batch)
)
UPDATE jobs SET state = 'failed', finished_at = :now, lease_expires_at = NULL,
    errors = json_insert(jobs.errors, '$[#]', json(v.error)), result = v.result
FROM v WHERE jobs.id = v.id AND +jobs.state = 'running' AND +jobs.worker_id = :worker
    AND +jobs.attempt = v.attempt
RETURNING jobs.id, jobs.owner_id, jobs.queue, jobs.type, jobs.attempt

-- name: promote
-- Up to :limit scheduled and retrying jobs whose time (:now) has come become queued, in
-- run_at order; their queues (for the wake-up). The due rows are ix_jobs_due's first
-- entries, its condition spelled and the index named (INDEXED BY): with the states bound
-- (`state IN (?, ?)`, as the Core statement had them) no partial index could serve, and
-- SQLite read every scheduled and retrying job through ix_jobs_finished and sorted them
-- by run_at at each scheduler tick, statistics or not (tests/store/test_claim_plans.py).
-- The fence's `+` keeps the outer rows by primary key.
UPDATE jobs SET state = 'queued'
WHERE id IN (
    SELECT id FROM jobs INDEXED BY ix_jobs_due
    WHERE state IN ('scheduled', 'retrying') AND run_at <= :now
    ORDER BY run_at LIMIT :limit
) AND +state IN ('scheduled', 'retrying')
RETURNING queue

-- name: rescue
-- Up to :limit running jobs whose lease ended before :now: queued again, or failed when
-- their attempts are spent, with a LeaseExpired error appended; requeued in due-time order
-- (its fair tag: its run_at's epoch). The expired leases are ix_jobs_lease's first rows,
-- named (INDEXED BY): without statistics (Conveyor runs no ANALYZE on SQLite) the plan read
-- every running job through ix_jobs_finished (state, finished_at) and sorted them by lease
-- at each scheduler tick (tests/store/test_claim_plans.py).
UPDATE jobs SET
    state = CASE WHEN attempt < max_attempts THEN 'queued' ELSE 'failed' END,
    finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE :now END,
    errors = json_insert(errors, '$[#]', json_object(
        'attempt', attempt, 'at', :now_iso, 'type', 'LeaseExpired',
        'message', 'the worker running this job stopped heartbeating',
        'worker_id', worker_id)),
    worker_id = NULL, lease_expires_at = NULL,
    fair_tag = (julianday(run_at) - 2440587.5) * 86400.0
WHERE id IN (
    SELECT id FROM jobs INDEXED BY ix_jobs_lease
    WHERE state = 'running' AND lease_expires_at < :now
    ORDER BY lease_expires_at LIMIT :limit
)
RETURNING id, state, queue, owner_id, type, attempt

-- name: try_lead
-- Leadership: a row with an expiry, taken when free or expired, renewed by its holder
-- (SQLite has no advisory locks); or taken from :dead, a holder whose process is known gone
-- (NULL matches no holder).
INSERT INTO leader_leases (name, holder, expires_at, host, pid, pid_started)
VALUES (:name, :holder, :expires, :host, :pid, :pid_started)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
    host = excluded.host, pid = excluded.pid, pid_started = excluded.pid_started
WHERE leader_leases.holder = excluded.holder OR leader_leases.expires_at < :now
    OR leader_leases.holder = :dead
RETURNING holder

-- name: unlead
DELETE FROM leader_leases WHERE name = :name AND holder = :holder

-- name: data_version
-- Changes when another connection commits: how idle processes notice other processes.
PRAGMA data_version

-- name: workflow_steps
-- A workflow's (:workflow) steps as jobs rows in one statement whatever the width, from
-- :steps, one JSON array per step: [id, queue, type, payload (its JSON text), priority,
-- state, max_attempts, timeout_s, idempotency_key, step, on_dependency_failure, fair_key,
-- fair_tag, limited, trace_context]. Shared: :owner, :now (created_at, run_at, and ready_at
-- of the queued ones). A step has no tags, schedule or unique key, and its row reads as the
-- Core insert of it did (result and errors as JSON text: 'null', '[]'). A step stored
-- waiting is one with dependencies (`depends`, migration 0028).
-- A queued step with a fair key gets its tag as a submit's ready job does (docs/flow-control.md
-- "Fair dispatch", postgres.sql `workflow_steps`): max(v, l) + r / w from its group's
-- `heads`, its rank r in the group in step order (an empty band: its own tag, its run_at's
-- epoch, + r / w); every other step keeps its own (a waiting step's comes at its release:
-- migration 0020's trigger). Computed here, in SQLite rather than in Python on the writer's
-- thread: the statement runs without the GIL beside the next slice's building.
WITH s AS (
    SELECT s.key AS n, s.value AS v, s.value ->> 1 AS queue, s.value ->> 4 AS priority,
        s.value ->> 11 AS fair_key, s.value ->> 12 AS own_tag,
        CASE WHEN s.value ->> 11 IS NOT NULL AND s.value ->> 5 = 'queued' THEN row_number()
            OVER (PARTITION BY s.value ->> 1, s.value ->> 4, s.value ->> 11,
                s.value ->> 11 IS NOT NULL AND s.value ->> 5 = 'queued' ORDER BY s.key)
            END AS r
    FROM json_each(:steps) AS s
),
g AS (
    SELECT DISTINCT queue, priority, fair_key, fair_key = :owner AS owned
    FROM s WHERE r IS NOT NULL
),
h AS (
    SELECT g.queue, g.priority, g.fair_key,
        -- include: heads
    FROM g
)
INSERT INTO jobs (id, owner_id, queue, type, payload, priority, state, attempt,
    max_attempts, run_at, timeout_s, idempotency_key, progress, result, errors, tags,
    created_at, fair_key, fair_tag, limited, trace_context, workflow_id, step,
    on_dependency_failure, ready_at, dep_checks, depends)
SELECT s.v ->> 0, :owner, s.queue, s.v ->> 2, s.v ->> 3, s.priority, s.v ->> 5, 0,
    s.v ->> 6, :now, s.v ->> 7, s.v ->> 8, 0, 'null', '[]', '[]', :now, s.fair_key,
    CASE WHEN s.r IS NULL THEN s.own_tag
        ELSE max(coalesce(h.v, s.own_tag), coalesce(h.l, h.v, s.own_tag)) + 1.0 * s.r / h.w
        END,
    s.v ->> 13, s.v ->> 14, :workflow, s.v ->> 9, s.v ->> 10,
    CASE WHEN s.v ->> 5 = 'queued' THEN :now END, 0, s.v ->> 5 = 'waiting'
FROM s LEFT JOIN h ON s.r IS NOT NULL AND h.queue = s.queue AND h.priority = s.priority
    AND h.fair_key = s.fair_key
ORDER BY s.n

-- name: workflow_created
-- The 'created' events (:type) of the steps `workflow_steps` inserted (the same :steps),
-- in step order; xid 0 (one writer), data JSON null as the Core insert wrote it.
INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
    created_at)
SELECT 0, :type, s.value ->> 0, :owner, s.value ->> 1, s.value ->> 2, s.value ->> 5, 0,
    'null', :now
FROM json_each(:steps) AS s ORDER BY s.key

-- name: workflow_edges
-- A workflow's (:workflow) dependency edges, :edges [[job_id, depends_on], ...].
INSERT INTO job_dependencies (job_id, depends_on, workflow_id)
SELECT e.value ->> 0, e.value ->> 1, :workflow FROM json_each(:edges) AS e ORDER BY e.key
