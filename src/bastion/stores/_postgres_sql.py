"""The PostgreSQL store's schema and statements (see :mod:`bastion.stores.postgres`).

Times are microseconds since the epoch (``bigint``). ``$now`` is the caller's time when the
store was given a clock other than the system clock (tests), else ``NULL``, and the statement
reads the database server's clock: hosts with skewed clocks then agree on expiry, as with
Redis.

The rate-limit function ``bastion_rl_hit`` mirrors the Python step functions of
:mod:`bastion.core.ratelimit` (their specification) and the Redis store's Lua scripts, line for
line, in exact integer arithmetic (``numeric`` where a product could pass ``bigint``). It
decides every rate of a call in one statement: one round trip, and one transaction that holds
the rows of the call's keys (created first when missing, then locked in key order, so two
callers never deadlock), so decisions are exact across processes and hosts.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CAS_INSERT",
    "CAS_UPDATE",
    "DELETE",
    "GET",
    "GET_MANY",
    "MIGRATIONS",
    "PURGE",
    "PURGE_RL",
    "RL_HIT",
    "SCHEMA_VERSION",
    "SET",
]

SCHEMA_VERSION: Final = 1

NOW: Final = "COALESCE(%(now)s::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)"


def _timed(statement: str) -> str:
    """``statement`` with each ``@NOW`` replaced by :data:`NOW` (a constant expression: the
    only values in these statements are bound parameters)."""
    return statement.replace("@NOW", NOW)


GET: Final = _timed("""
SELECT value FROM bastion_kv
WHERE key = %(key)s AND (expires_at IS NULL OR expires_at > @NOW)""")

GET_MANY: Final = _timed("""
SELECT key, value FROM bastion_kv
WHERE key = ANY(%(keys)s) AND (expires_at IS NULL OR expires_at > @NOW)""")

# ttl: microseconds, or NULL for none.
SET: Final = _timed("""
INSERT INTO bastion_kv (key, value, expires_at)
VALUES (%(key)s, %(value)s, @NOW + %(ttl)s::bigint)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at""")

# True when a live entry was removed (an expired one is removed too, and reported as absent).
DELETE: Final = _timed("""
WITH gone AS (DELETE FROM bastion_kv WHERE key = %(key)s RETURNING expires_at)
SELECT count(*) FROM gone WHERE expires_at IS NULL OR expires_at > @NOW""")

# Create-if-absent (or expired), as one statement: the conflict arm replaces only an expired row.
CAS_INSERT: Final = _timed("""
INSERT INTO bastion_kv (key, value, expires_at)
VALUES (%(key)s, %(value)s, @NOW + %(ttl)s::bigint)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
WHERE bastion_kv.expires_at IS NOT NULL AND bastion_kv.expires_at <= @NOW
RETURNING 1""")

# Swap when the live value is the expected one. PostgreSQL re-checks the WHERE clause on the
# newest row version after waiting for a concurrent writer's lock, so two swaps never both win.
CAS_UPDATE: Final = _timed("""
UPDATE bastion_kv SET value = %(value)s, expires_at = @NOW + %(ttl)s::bigint
WHERE key = %(key)s AND value = %(expected)s AND (expires_at IS NULL OR expires_at > @NOW)
RETURNING 1""")

PURGE: Final = _timed("""
DELETE FROM bastion_kv WHERE key IN (
    SELECT key FROM bastion_kv WHERE expires_at <= @NOW LIMIT %(batch)s
)""")

PURGE_RL: Final = _timed("""
DELETE FROM bastion_ratelimit WHERE key IN (
    SELECT key FROM bastion_ratelimit WHERE expires_at <= @NOW LIMIT %(batch)s
)""")

RL_HIT: Final = (
    "SELECT bastion_rl_hit(%(keys)s::bytea[], %(strategy)s::text, %(now)s::bigint, "
    "%(cost)s::bigint, %(limits)s::bigint[], %(periods)s::bigint[])"
)

_FUNCTIONS: Final = r"""
CREATE OR REPLACE FUNCTION bastion_idiv(a bigint, b bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE WHEN a % b <> 0 AND ((a < 0) <> (b < 0)) THEN a / b - 1 ELSE a / b END
$$;

CREATE OR REPLACE FUNCTION bastion_ndiv(a numeric, b numeric) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT floor(a / b)::bigint $$;

DO $$ BEGIN
  CREATE TYPE bastion_rl_step AS (
    state bigint[], expires bigint, ok boolean, remaining bigint, reset bigint, retry bigint
  );
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE OR REPLACE FUNCTION bastion_rl_fixed(st bigint[], now bigint, cost bigint, lim bigint,
                                            period bigint)
RETURNS bastion_rl_step LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  idx bigint := bastion_idiv(now, period);
  cnt bigint := 0;
  e bigint;
  ok boolean;
  rst bigint := 0;
BEGIN
  IF st IS NOT NULL AND cardinality(st) = 2 AND st[1] = idx THEN cnt := st[2]; END IF;
  e := (idx + 1) * period;
  ok := cnt + cost <= lim;
  IF ok THEN cnt := cnt + cost; END IF;
  IF cnt > 0 THEN rst := e - now; END IF;
  RETURN ROW(ARRAY[idx, cnt], e, ok, lim - cnt, rst, rst)::bastion_rl_step;
END $$;

CREATE OR REPLACE FUNCTION bastion_rl_sliding(st bigint[], now bigint, cost bigint, lim bigint,
                                              period bigint)
RETURNS bastion_rl_step LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  idx bigint := bastion_idiv(now, period);
  cur bigint := 0;
  prev bigint := 0;
  elapsed bigint;
  lft bigint;
  used numeric;
  ok boolean;
  rst bigint := 0;
  retry bigint := 0;
  room bigint;
  wait bigint;
  need bigint;
BEGIN
  IF st IS NOT NULL AND cardinality(st) = 3 THEN
    IF st[1] = idx THEN cur := st[2]; prev := st[3];
    ELSIF st[1] = idx - 1 THEN prev := st[2];
    END IF;
  END IF;
  elapsed := now - idx * period;
  lft := period - elapsed;
  used := prev::numeric * lft + cur::numeric * period;
  ok := used + cost::numeric * period <= lim::numeric * period;
  IF ok THEN
    cur := cur + cost;
    used := used + cost::numeric * period;
  END IF;
  IF cur > 0 THEN rst := lft + period; ELSIF prev > 0 THEN rst := lft; END IF;
  IF NOT ok THEN
    room := lim - cur - cost;
    IF room >= 0 AND prev > 0 THEN
      retry := greatest(1, period - bastion_ndiv(room::numeric * period, prev) - elapsed);
    ELSE
      wait := period - elapsed;
      need := least(cost, lim);
      IF cur + need > lim THEN
        wait := wait + period - bastion_ndiv((lim - need)::numeric * period, cur);
      END IF;
      retry := greatest(1, wait);
    END IF;
  END IF;
  RETURN ROW(ARRAY[idx, cur, prev], (idx + 2) * period, ok,
             bastion_ndiv(lim::numeric * period - used, period), rst, retry)::bastion_rl_step;
END $$;

CREATE OR REPLACE FUNCTION bastion_rl_log(st bigint[], now bigint, cost bigint, lim bigint,
                                          period bigint)
RETURNS bastion_rl_step LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  cutoff bigint := now - period;
  log bigint[] := ARRAY[]::bigint[];
  used bigint := 0;
  ok boolean;
  retry bigint := 0;
  need bigint;
  freed bigint := 0;
  rst bigint := 0;
  expires bigint := now;
  n int;
BEGIN
  IF st IS NOT NULL AND cardinality(st) % 2 = 0 THEN
    FOR i IN 1 .. cardinality(st) - 1 BY 2 LOOP
      IF st[i] > cutoff THEN
        log := log || ARRAY[st[i], st[i + 1]];
        used := used + st[i + 1];
      END IF;
    END LOOP;
  END IF;
  ok := used + cost <= lim;
  IF ok THEN
    used := used + cost;
    n := cardinality(log);
    IF n > 0 AND log[n - 1] = now THEN
      log[n] := log[n] + cost;
    ELSE
      log := log || ARRAY[now, cost];
    END IF;
  END IF;
  IF NOT ok THEN
    need := least(cost, lim);
    FOR i IN 1 .. cardinality(log) - 1 BY 2 LOOP
      freed := freed + log[i + 1];
      IF used - freed + need <= lim THEN
        retry := log[i] + period - now;
        EXIT;
      END IF;
    END LOOP;
  END IF;
  n := cardinality(log);
  IF n > 0 THEN
    rst := log[n - 1] + period - now;
    expires := log[n - 1] + period;
  END IF;
  RETURN ROW(log, expires, ok, lim - used, rst, retry)::bastion_rl_step;
END $$;

CREATE OR REPLACE FUNCTION bastion_rl_gcra(st bigint[], now bigint, cost bigint, lim bigint,
                                           period bigint)
RETURNS bastion_rl_step LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  capacity numeric := lim::numeric * period;
  level numeric := 0;
  elapsed bigint;
  ok boolean;
  retry bigint := 0;
  rst bigint;
BEGIN
  IF st IS NOT NULL AND cardinality(st) = 2 THEN
    elapsed := now - st[2];
    IF elapsed <= 0 THEN level := st[1];
    ELSE level := greatest(0, st[1]::numeric - elapsed::numeric * lim);
    END IF;
  END IF;
  ok := level + cost::numeric * period <= capacity;
  IF ok THEN level := level + cost::numeric * period; END IF;
  IF NOT ok THEN
    retry := -bastion_ndiv(-(level + least(cost, lim)::numeric * period - capacity), lim);
  END IF;
  rst := -bastion_ndiv(-level, lim);
  RETURN ROW(ARRAY[level::bigint, now], now + rst, ok, bastion_ndiv(capacity - level, period),
             rst, retry)::bastion_rl_step;
END $$;

CREATE OR REPLACE FUNCTION bastion_rl_hit(keys bytea[], strategy text, given_now bigint,
                                          cost bigint, limits bigint[], periods bigint[])
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
  now bigint := COALESCE(given_now, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  n int := cardinality(keys);
  results bastion_rl_step[] := ARRAY[]::bastion_rl_step[];
  r bastion_rl_step;
  st bigint[];
  all_ok boolean := true;
  reply bigint[];
  row_state bigint[];
  row_expires bigint;
BEGIN
  -- Make every row exist, then lock them in key order: exact and deadlock-free.
  INSERT INTO bastion_ratelimit (key, state, expires_at)
  SELECT k, NULL, 0 FROM unnest(keys) AS k ORDER BY k
  ON CONFLICT (key) DO NOTHING;
  PERFORM 1 FROM bastion_ratelimit WHERE key = ANY(keys) ORDER BY key FOR UPDATE;
  FOR i IN 1 .. n LOOP
    SELECT state, expires_at INTO row_state, row_expires
    FROM bastion_ratelimit WHERE key = keys[i];
    st := CASE WHEN row_expires > now THEN row_state ELSE NULL END;
    r := CASE strategy
      WHEN 'fixed_window' THEN bastion_rl_fixed(st, now, cost, limits[i], periods[i])
      WHEN 'sliding_window' THEN bastion_rl_sliding(st, now, cost, limits[i], periods[i])
      WHEN 'sliding_log' THEN bastion_rl_log(st, now, cost, limits[i], periods[i])
      WHEN 'token_bucket' THEN bastion_rl_gcra(st, now, cost, limits[i], periods[i])
    END;
    IF r IS NULL THEN RAISE EXCEPTION 'unknown rate-limit strategy %', strategy; END IF;
    results := results || r;
    IF NOT r.ok THEN all_ok := false; END IF;
  END LOOP;
  reply := ARRAY[CASE WHEN all_ok THEN 1 ELSE 0 END];
  FOR i IN 1 .. n LOOP
    r := results[i];
    IF all_ok THEN
      IF r.expires > now THEN
        UPDATE bastion_ratelimit SET state = r.state, expires_at = r.expires WHERE key = keys[i];
      ELSE
        DELETE FROM bastion_ratelimit WHERE key = keys[i];
      END IF;
    ELSIF r.ok THEN
      SELECT state, expires_at INTO row_state, row_expires
      FROM bastion_ratelimit WHERE key = keys[i];
      st := CASE WHEN row_expires > now THEN row_state ELSE NULL END;
      r := CASE strategy
        WHEN 'fixed_window' THEN bastion_rl_fixed(st, now, 0, limits[i], periods[i])
        WHEN 'sliding_window' THEN bastion_rl_sliding(st, now, 0, limits[i], periods[i])
        WHEN 'sliding_log' THEN bastion_rl_log(st, now, 0, limits[i], periods[i])
        ELSE bastion_rl_gcra(st, now, 0, limits[i], periods[i])
      END;
    END IF;
    reply := reply || ARRAY[CASE WHEN r.ok THEN 1 ELSE 0 END, greatest(0, r.remaining),
                            greatest(0, r.reset), greatest(0, r.retry)];
  END LOOP;
  RETURN reply;
END $$;
"""

MIGRATIONS: Final = (
    # Version 1: the key-value table, the rate-limit counters and their function.
    (
        1,
        """
CREATE TABLE IF NOT EXISTS bastion_kv (
    key bytea PRIMARY KEY,
    value bytea NOT NULL,
    expires_at bigint
);
CREATE INDEX IF NOT EXISTS bastion_kv_expires ON bastion_kv (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS bastion_ratelimit (
    key bytea PRIMARY KEY,
    state bigint[],
    expires_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS bastion_ratelimit_expires ON bastion_ratelimit (expires_at);
"""
        + _FUNCTIONS,
    ),
)
"""``(version, SQL)`` in order; the store applies those above the database's version."""
