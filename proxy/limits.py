"""Rate limits, parallel-request caps and hard budgets, enforced atomically across processes.

Admission is one round trip: a Lua script checks every applicable limit (RPM/TPM for the key, the
tenant and the deployment; the key's parallel cap; every budget) and, only if all pass, records the
request and reserves the call's worst-case cost. After the call a second script settles: it trues up
the token count, frees the parallel slot and turns the reservation into the actual spend. N gateway
processes sharing Redis therefore never admit more than a limit, and a hard budget is never overshot.
Reservations and parallel slots carry an expiry: the call's deadline plus a margin (hold_ms), at most
GATEWAY_RESERVATION_TTL, so a crashed process's calls free their slots and reservations soon after
they would have ended anyway; sooner still, the sweeper of proxy.recovery frees them within seconds
of their process's lease running out. Budget counters survive Redis losing its data through the
same module: an epoch, rebuilt counters (the ledger, plus the spend of calls settled while the
counter was missing, "orphans"), and open reservations registered again by the processes that hold them.

Without REDIS_URL (the embedded default, one process) the same algorithm runs in-process.

Windows are sliding over 60 one-second buckets: a request admitted at second s counts against the
limit until second s+60.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings

from proxy.redis_wire import Client, Script, command, retrieve

logger = logging.getLogger("gateway.limits")

WINDOW = 60
# A reservation or parallel slot older than this is presumed to belong to a crashed process.
STALE_MS = int(settings.GATEWAY_RESERVATION_TTL * 1000)


@dataclass(slots=True)
class RateCheck:
    scope: str  # "k:12", "t:3", "d:40"
    rpm: int | None
    tpm: int | None


@dataclass(slots=True)
class BudgetCheck:
    budget_id: int
    key: str  # redis key of the period's spent counter: gw:b:<id>:<period>
    limit_nanos: int
    hard: bool
    alert_at: tuple[int, ...]
    scope: str
    period_key: str


@dataclass(slots=True)
class Admission:
    ok: bool
    reason: str = ""  # "rpm" | "tpm" | "parallel" | "budget"
    scope: str = ""
    retry_after: float = 0.0
    spent_nanos: int = 0  # for a budget refusal: what the period has already spent
    index: int = -1  # for a budget refusal or a seed request: which budget check
    # For the x-ratelimit-* headers: the most constrained scope of each kind.
    headers: dict[str, str] = field(default_factory=dict)
    # The prompt cache's entry fetched in the same round trip (RedisLimiter.admit's cache_key), if any.
    cached: bytes | None = None


@dataclass(slots=True)
class Reservation:
    request_id: str
    rates: list[RateCheck]
    tokens_reserved: int
    parallel_key: str | None
    budgets: list[BudgetCheck]
    reserve_nanos: int
    admitted_s: int = 0
    expires_ms: int = 0  # when Redis frees the parallel slot and reservation if the call never settles
    # The call's request id, set when it is answered: a settlement that finds the counter gone records
    # its spend under it (an orphan), so that the counter's rebuild counts it once (see SETTLE_LUA).
    call_ref: str = ""


def _fmt_reset(seconds: float) -> str:
    """OpenAI's duration format: 250ms, 17s, 1m0s."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 1)}ms"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    return f"{whole // 60}m{whole % 60}s"


def _headers(
    rates: list[RateCheck], usage: list[tuple[int, int, int]], now_s: int, tokens: int, admitted: bool
) -> dict:
    """Report the scope with the least remaining, per kind, as OpenAI does for its own limits."""
    out: dict[str, str] = {}
    for kind, idx, cost in (("requests", 0, 1), ("tokens", 1, tokens)):
        best = None
        for check, (used_r, used_t, oldest) in zip(rates, usage, strict=True):
            limit = check.rpm if idx == 0 else check.tpm
            if not limit:
                continue
            used = (used_r if idx == 0 else used_t) + (cost if admitted else 0)
            remaining = max(limit - used, 0)
            reset = (oldest + WINDOW - now_s) if oldest else WINDOW
            if best is None or remaining < best[1]:
                best = (limit, remaining, reset)
        if best is not None:
            out[f"x-ratelimit-limit-{kind}"] = str(best[0])
            out[f"x-ratelimit-remaining-{kind}"] = str(best[1])
            out[f"x-ratelimit-reset-{kind}"] = _fmt_reset(max(best[2], 0.001))
    return out


# --- Redis backend -------------------------------------------------------------------------------------

ADMIT_LUA = """
local now_ms = tonumber(ARGV[1])
local now_s = math.floor(now_ms / 1000)
local window = tonumber(ARGV[2])
local n_rate = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local rid = ARGV[5]
local hold_ms = tonumber(ARGV[6])
local parallel_limit = tonumber(ARGV[7])
local n_budget = tonumber(ARGV[8])
local reserve = tonumber(ARGV[9])
local a = 10
local k = 1
local usage = {}
local deny = nil
-- rate scopes: KEYS[k] requests hash, KEYS[k+1] tokens hash; ARGV rpm, tpm
for i = 1, n_rate do
  local rpm = tonumber(ARGV[a]); local tpm = tonumber(ARGV[a + 1]); a = a + 2
  local sums = {0, 0}; local oldest = 0
  for j = 0, 1 do
    local h = redis.call('HGETALL', KEYS[k + j])
    for x = 1, #h, 2 do
      local sec = tonumber(h[x])
      if sec <= now_s - window then
        redis.call('HDEL', KEYS[k + j], h[x])
      else
        sums[j + 1] = sums[j + 1] + tonumber(h[x + 1])
        if j == 0 and (oldest == 0 or sec < oldest) then oldest = sec end
      end
    end
  end
  usage[i] = {sums[1], sums[2], oldest}
  if not deny then
    if rpm > 0 and sums[1] + 1 > rpm then deny = {'rpm', i, (oldest > 0) and (oldest + window - now_s) or 1} end
    if not deny and tpm > 0 and sums[2] + tokens > tpm and sums[2] > 0 then deny = {'tpm', i, window} end
  end
  k = k + 2
end
local pkey = nil
if parallel_limit > 0 then
  pkey = KEYS[k]; k = k + 1
  redis.call('ZREMRANGEBYSCORE', pkey, '-inf', now_ms)  -- scores are expiry times
  if not deny and redis.call('ZCARD', pkey) >= parallel_limit then deny = {'parallel', 0, 1} end
end
-- budgets: KEYS spent, reservations hash, reservation expiry zset; ARGV limit, hard
local bstart = k
for i = 1, n_budget do
  local spent_key = KEYS[k]; local res_key = KEYS[k + 1]; local exp_key = KEYS[k + 2]
  local limit = tonumber(ARGV[a]); local hard = tonumber(ARGV[a + 1]); a = a + 2
  -- No counter (new period, or Redis lost it): the caller seeds it from the ledger and retries.
  -- Starting from zero would forget what the period already spent.
  if redis.call('EXISTS', spent_key) == 0 then return {0, 'seed', i, 0, '[]'} end
  local expired = redis.call('ZRANGEBYSCORE', exp_key, '-inf', now_ms)
  for _, old in ipairs(expired) do
    local amt = tonumber(redis.call('HGET', res_key, old) or '0')
    redis.call('HDEL', res_key, old)
    redis.call('HINCRBY', res_key, '_total', -amt)
    redis.call('ZREM', exp_key, old)
  end
  if not deny and hard == 1 then
    local spent = tonumber(redis.call('GET', spent_key) or '0')
    local reserved = tonumber(redis.call('HGET', res_key, '_total') or '0')
    -- the third field carries the settled spend, for the alert that says why requests are refused
    if spent + reserved + reserve > limit then deny = {'budget', i, spent} end
  end
  k = k + 3
end
if deny then
  return {0, deny[1], deny[2], deny[3], cjson.encode(usage)}
end
k = 1
for i = 1, n_rate do
  redis.call('HINCRBY', KEYS[k], now_s, 1)
  redis.call('EXPIRE', KEYS[k], window + 1)
  if tokens > 0 then
    redis.call('HINCRBY', KEYS[k + 1], now_s, tokens)
  end
  redis.call('EXPIRE', KEYS[k + 1], window + 1)
  k = k + 2
end
-- A key lives as long as its longest-held member (never shortened by a call with a nearer deadline).
local function hold(key)
  if redis.call('PTTL', key) < hold_ms then redis.call('PEXPIRE', key, hold_ms) end
end
-- KEYS[#KEYS] (gw:held) lists every sorted set of held slots and reservations, for the sweeper of
-- dead processes' reservations (proxy.recovery).
if pkey then
  redis.call('ZADD', pkey, now_ms + hold_ms, rid)
  hold(pkey)
  redis.call('SADD', KEYS[#KEYS], pkey)
end
k = bstart
for i = 1, n_budget do
  if reserve > 0 then
    redis.call('HSET', KEYS[k + 1], rid, ARGV[9])
    redis.call('HINCRBY', KEYS[k + 1], '_total', ARGV[9])
    redis.call('ZADD', KEYS[k + 2], now_ms + hold_ms, rid)
    hold(KEYS[k + 1])
    hold(KEYS[k + 2])
    redis.call('SADD', KEYS[#KEYS], KEYS[k + 2])
  end
  k = k + 3
end
return {1, '', 0, 0, cjson.encode(usage)}
"""

SETTLE_LUA = """
local now_s = math.floor(tonumber(ARGV[1]) / 1000)
local n_rate = tonumber(ARGV[2])
local token_delta = tonumber(ARGV[3])
local rid = ARGV[4]
local has_parallel = tonumber(ARGV[5])
local n_budget = tonumber(ARGV[6])
local ttl = tonumber(ARGV[8])
local admit_s = tonumber(ARGV[9])
local call_ref = ARGV[10]
local k = 1
for i = 1, n_rate do
  -- The correction goes to the bucket the tokens were counted in, so that the window never holds a
  -- negative bucket that outlives the positive one (which would let later requests through).
  if token_delta ~= 0 and admit_s > now_s - 60 and redis.call('HEXISTS', KEYS[k], admit_s) == 1 then
    redis.call('HINCRBY', KEYS[k], admit_s, token_delta)
  end
  k = k + 1
end
if has_parallel == 1 then
  redis.call('ZREM', KEYS[k], rid)
  k = k + 1
end
local out = {}
for i = 1, n_budget do
  local spent_key = KEYS[k]; local res_key = KEYS[k + 1]; local exp_key = KEYS[k + 2]
  local orphans = KEYS[k + 3]
  local amt = redis.call('HGET', res_key, rid)
  if amt then
    redis.call('HDEL', res_key, rid)
    redis.call('HINCRBY', res_key, '_total', -tonumber(amt))
    redis.call('ZREM', exp_key, rid)
  end
  -- Strings, not Lua numbers: those are doubles and print with 14 digits.
  local before = redis.call('GET', spent_key)
  if before then
    redis.call('INCRBY', spent_key, ARGV[7])
    redis.call('EXPIRE', spent_key, ttl)
    out[#out + 1] = before
    out[#out + 1] = redis.call('GET', spent_key)
  else
    -- The counter is gone (Redis lost its data): the next admission rebuilds it from the ledger,
    -- which may not hold this call yet (its log row is on its way). Keep its spend under its request
    -- id: the rebuild adds the orphans the ledger lacks (RedisLimiter.seed).
    if call_ref ~= '' and tonumber(ARGV[7]) > 0 then
      redis.call('HSET', orphans, call_ref, ARGV[7])
      redis.call('EXPIRE', orphans, 172800)
    end
    out[#out + 1] = '0'
    out[#out + 1] = '0'
  end
  k = k + 4
end
return out
"""


# The epoch: which Redis the counters belong to. "<run_id>|<ms>": the server's run id (new at every
# start, and on a failover, since another server answers) and when the epoch began. A missing epoch
# (data lost, or flushed) or one of another run id (a restart, perhaps from a snapshot a second or
# more behind) means the budget counters cannot be trusted: every counter listed in gw:budgets is
# deleted, to be rebuilt from the ledger by the next admission, once the epoch is GATEWAY_REBUILD_DELAY
# old (time for every process to notice, store its spooled call logs and register its open reservations
# again). Shared by the tick and the seed: whichever comes first starts the new epoch.
EPOCH_LUA = """
local function epoch_now(epoch_key, index_key)
  local info = redis.call('INFO', 'server')
  local run_id = string.match(info, 'run_id:(%x+)')
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local epoch = redis.call('GET', epoch_key)
  if epoch and string.sub(epoch, 1, #run_id + 1) == run_id .. '|' then
    return epoch, now_ms, tonumber(string.sub(epoch, #run_id + 2))
  end
  epoch = run_id .. '|' .. now_ms
  redis.call('SET', epoch_key, epoch)
  for _, counter in ipairs(redis.call('SMEMBERS', index_key)) do
    redis.call('DEL', counter)
  end
  redis.call('DEL', index_key)
  return epoch, now_ms, now_ms
end
"""

# KEYS: epoch, budget index, this process's lease. ARGV: lease ttl ms. Returns the epoch.
TICK_LUA = (
    EPOCH_LUA
    + """
local epoch = epoch_now(KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[1])
return epoch
"""
)

# KEYS: counter, its orphans, epoch, budget index. ARGV: the ledger's spend (nanos), the rebuild delay
# (ms), then the orphans found in the ledger already. Returns {1} (seeded or there already) or {0, ms
# to wait} while the epoch is too young.
SEED_LUA = (
    EPOCH_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, 0} end
local epoch, now_ms, since = epoch_now(KEYS[3], KEYS[4])
local wait = since + tonumber(ARGV[2]) - now_ms
if wait > 0 then return {0, wait} end
local stored = {}
for i = 3, #ARGV do stored[ARGV[i]] = true end
local total = tonumber(ARGV[1])
local orphans = redis.call('HGETALL', KEYS[2])
for x = 1, #orphans, 2 do
  if not stored[orphans[x]] then total = total + tonumber(orphans[x + 1]) end
end
redis.call('SET', KEYS[1], string.format('%d', total), 'EX', 400 * 86400)
redis.call('SADD', KEYS[4], KEYS[1])
redis.call('DEL', KEYS[2])
return {1, 0}
"""
)

# Register an open reservation (and parallel slot) again after the epoch changed. Idempotent.
# KEYS: [parallel zset], then per budget: reservations hash, expiry zset; last: gw:held.
# ARGV: rid, amount, expires_ms, has_parallel.
RESTORE_LUA = """
local rid = ARGV[1]; local amt = tonumber(ARGV[2]); local expires = tonumber(ARGV[3])
local k = 1
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[1], expires, rid)
  redis.call('SADD', KEYS[#KEYS], KEYS[1])
  k = 2
end
while k + 1 < #KEYS do
  if amt > 0 and redis.call('HEXISTS', KEYS[k], rid) == 0 then
    redis.call('HSET', KEYS[k], rid, amt)
    redis.call('HINCRBY', KEYS[k], '_total', amt)
    redis.call('ZADD', KEYS[k + 1], expires, rid)
    redis.call('SADD', KEYS[#KEYS], KEYS[k + 1])
  end
  k = k + 2
end
return 1
"""

# Free the members of dead processes. KEYS: gw:held, gw:swept, the sorted set, and for a budget its
# reservations hash. ARGV: the members. A freed budget reservation is remembered in gw:swept: its call
# may have been answered with the settlement never run, which the spool then applies (SETTLE_LOST_LUA).
RELEASE_LUA = """
local zset = KEYS[3]
local res = KEYS[4]
local freed = 0
for _, rid in ipairs(ARGV) do
  if redis.call('ZREM', zset, rid) == 1 then freed = freed + 1 end
  if res then
    local amt = redis.call('HGET', res, rid)
    if amt then
      redis.call('HDEL', res, rid)
      redis.call('HINCRBY', res, '_total', -tonumber(amt))
      redis.call('HSET', KEYS[2], rid, '1')
      redis.call('EXPIRE', KEYS[2], 86400)
    end
  end
end
if redis.call('ZCARD', zset) == 0 then redis.call('SREM', KEYS[1], zset) end
return freed
"""

# The settlement of an answered call whose process died before settling (read back from its spool):
# applied only if the reservation is still held or was freed by the sweeper, i.e. never settled.
# KEYS: gw:swept, then per budget: counter, reservations hash, expiry zset. ARGV: slot id, nanos.
SETTLE_LOST_LUA = """
local rid = ARGV[1]
local swept = redis.call('HDEL', KEYS[1], rid) == 1
local applied = 0
for k = 2, #KEYS, 3 do
  local amt = redis.call('HGET', KEYS[k + 1], rid)
  if amt then
    redis.call('HDEL', KEYS[k + 1], rid)
    redis.call('HINCRBY', KEYS[k + 1], '_total', -tonumber(amt))
    redis.call('ZREM', KEYS[k + 2], rid)
  end
  if (amt or swept) and redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('INCRBY', KEYS[k], ARGV[2])
    applied = applied + 1
  end
end
return applied
"""

HELD_KEY = "gw:held"
SWEPT_KEY = "gw:swept"
EPOCH_KEY = "gw:epoch"
BUDGET_INDEX_KEY = "gw:budgets"


def lease_key(prefix: str) -> str:
    return f"gw:lease:{prefix}"


def _decide(
    ok: int,
    reason: str,
    which: int,
    value: int,
    usage: list[tuple[int, int, int]],
    request_id: str,
    rates: list[RateCheck],
    tokens: int,
    parallel: tuple[str, int] | None,
    budgets: list[BudgetCheck],
    reserve: int,
    now_ms: int,
    hold_ms: int = 0,
) -> tuple[Admission, Reservation | None]:
    """Turn the admission script's answer (or its in-process twin's) into an Admission."""
    headers = _headers(rates, usage, now_ms // 1000, tokens, bool(ok)) if len(usage) == len(rates) else {}
    if not ok:
        scope = ""
        if reason in ("rpm", "tpm"):
            scope = rates[int(which) - 1].scope
        elif reason in ("budget", "seed"):
            index = int(which) - 1
            admission = Admission(False, reason, budgets[index].scope, headers=headers, index=index)
            admission.spent_nanos = int(value)
            return admission, None
        return Admission(False, reason, scope, retry_after=float(value), headers=headers), None
    reservation = Reservation(
        request_id,
        rates,
        tokens,
        parallel[0] if parallel else None,
        budgets,
        reserve if budgets else 0,
        now_ms // 1000,
        now_ms + hold_ms,
    )
    return Admission(True, headers=headers), reservation


# parallel slot or a reservation is held this much longer, at most.
SETTLE_DEFER = 0.005

_ADMIT = Script.of(ADMIT_LUA)
_SETTLE = Script.of(SETTLE_LUA)
_TICK = Script.of(TICK_LUA)
_SEED = Script.of(SEED_LUA)
_RESTORE = Script.of(RESTORE_LUA)
_RELEASE = Script.of(RELEASE_LUA)


class RedisLimiter:
    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: dict[int, Client] = {}

    def _client(self) -> Client:
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        # A client belongs to the loop it was made on; a new loop may reuse a finished one's id.
        if client is None or client.loop is not loop:
            for ident in [i for i, c in self._clients.items() if c.loop.is_closed()]:
                del self._clients[ident]
            client = self._clients[id(loop)] = Client(self.url, loop)
        return client

    async def admit(
        self,
        request_id: str,
        rates: list[RateCheck],
        tokens: int,
        parallel: tuple[str, int] | None,
        budgets: list[BudgetCheck],
        reserve_nanos: int,
        cache_key: str = "",
        hold_ms: int = 0,
    ) -> tuple[Admission, Reservation | None]:
        """`hold_ms`: how long the parallel slot and the budget reservation are held if the call never
        settles (its process died): the call's deadline plus a margin; GATEWAY_RESERVATION_TTL by default."""
        client = self._client()
        now_ms = int(time.time() * 1000)
        cached = None
        if cache_key:
            # The prompt cache's lookup (proxy.steps.cache) is queued just before the script, so both
            # leave in one write and come back in one read: one round trip for the pair.
            conn = client.conn if client.conn is not None and client.conn.lost is None else await client.connection()
            cached = conn.send(command(b"GET", cache_key))
            cached.add_done_callback(retrieve)  # a failed admission must not leave it unretrieved
        keys: list[str] = []
        args: list[Any] = [
            now_ms,
            WINDOW,
            len(rates),
            tokens,
            request_id,
            hold_ms or STALE_MS,
            parallel[1] if parallel else 0,
            len(budgets),
            reserve_nanos,
        ]
        for r in rates:
            keys += [f"gw:rl:{r.scope}:r", f"gw:rl:{r.scope}:t"]
            args += [r.rpm or 0, r.tpm or 0]
        if parallel:
            keys.append(f"gw:par:{parallel[0]}")
        for b in budgets:
            keys += [b.key, b.key + ":res", b.key + ":exp"]
            args += [b.limit_nanos, 1 if b.hard else 0]
        keys.append(HELD_KEY)
        ok, reason, which, retry, usage_json = await client.evalsha(_ADMIT, keys, args)
        # cjson encodes an empty table as an object: no rate scopes, no usage.
        usage = orjson.loads(usage_json) if usage_json not in (b"[]", b"{}") else []
        admission, reservation = _decide(
            ok,
            reason.decode(),
            which,
            retry,
            [tuple(u) for u in usage],
            request_id,
            rates,
            tokens,
            parallel,
            budgets,
            reserve_nanos,
            now_ms,
            hold_ms or STALE_MS,
        )
        if cached is not None:
            admission.cached = await cached  # already read along with the script's reply
        return admission, reservation

    async def settle(self, reservation: Reservation, actual_tokens: int, actual_nanos: int) -> list[tuple[int, int]]:
        client = self._client()
        keys: list[str] = [f"gw:rl:{r.scope}:t" for r in reservation.rates]
        if reservation.parallel_key:
            keys.append(f"gw:par:{reservation.parallel_key}")
        for b in reservation.budgets:
            keys += [b.key, b.key + ":res", b.key + ":exp", b.key + ":orph"]
        args = [
            int(time.time() * 1000),
            len(reservation.rates),
            actual_tokens - reservation.tokens_reserved,
            reservation.request_id,
            1 if reservation.parallel_key else 0,
            len(reservation.budgets),
            actual_nanos,
            400 * 86400,
            reservation.admitted_s,
            reservation.call_ref,
        ]
        # Nobody waits for a settlement (it runs after the answer went out): it rides along with the next
        # admission's write instead of costing its own system calls, or leaves on its own within SETTLE_DEFER.
        raw = await client.evalsha(_SETTLE, keys, args, SETTLE_DEFER)
        values = [int(v) for v in raw]
        return list(zip(values[::2], values[1::2], strict=True))

    # The prompt cache's own reads and writes ride the same pipelined connection (proxy.steps.cache).

    async def get(self, key: str) -> bytes | None:
        """One GET: the cache lookup of a call that has no admission to fold it into."""
        client = self._client()
        conn = await client.connection()
        return await conn.send(command(b"GET", key))

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        """A cache fill: nobody waits for it, so it waits for company on the wire like a settlement."""
        client = self._client()
        conn = await client.connection()
        await conn.send(command(b"SET", key, value, b"EX", ttl_s), SETTLE_DEFER)

    # -- rebuilding counters and freeing dead processes' reservations (driven by proxy.recovery) --------

    async def orphans(self, key: str) -> dict[str, int]:
        """The spend settled while the counter was missing, by request id (see SETTLE_LUA)."""
        conn = await self._client().connection()
        flat = await conn.send(command(b"HGETALL", key + ":orph"))
        return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def seed(self, key: str, ledger_nanos: int, stored: list[str], delay_ms: int) -> float:
        """Start a period's counter: the ledger plus the orphans it does not hold (`stored`: those it
        does). Returns 0 once the counter exists, else the seconds to wait while the epoch is young."""
        done, wait_ms = await self._client().evalsha(
            _SEED, [key, key + ":orph", EPOCH_KEY, BUDGET_INDEX_KEY], [ledger_nanos, delay_ms, *stored]
        )
        return 0.0 if done else wait_ms / 1000

    async def tick(self, prefix: str, lease_ms: int) -> str:
        """Renew this process's lease and return the epoch (starting a new one if Redis lost its data)."""
        epoch = await self._client().evalsha(_TICK, [EPOCH_KEY, BUDGET_INDEX_KEY, lease_key(prefix)], [lease_ms])
        return epoch.decode()

    async def restore(self, reservation: Reservation) -> None:
        keys = [f"gw:par:{reservation.parallel_key}"] if reservation.parallel_key else []
        for b in reservation.budgets:
            keys += [b.key + ":res", b.key + ":exp"]
        keys.append(HELD_KEY)
        args = [
            reservation.request_id,
            reservation.reserve_nanos,
            reservation.expires_ms,
            "1" if reservation.parallel_key else "0",
        ]
        await self._client().evalsha(_RESTORE, keys, args)

    async def held(self) -> dict[str, list[str]]:
        """Every sorted set of held slots and reservations, with its members."""
        conn = await self._client().connection()
        names = [n.decode() for n in await conn.send(command(b"SMEMBERS", HELD_KEY))]
        replies = [conn.send(command(b"ZRANGE", name, 0, -1)) for name in names]
        return {name: [m.decode() for m in await reply] for name, reply in zip(names, replies, strict=True)}

    async def leases_alive(self, prefixes: list[str]) -> dict[str, bool]:
        if not prefixes:
            return {}
        conn = await self._client().connection()
        values = await conn.send(command(b"MGET", *[lease_key(p) for p in prefixes]))
        return {p: v is not None for p, v in zip(prefixes, values, strict=True)}

    async def try_lock(self, name: str, ttl_ms: int) -> bool:
        conn = await self._client().connection()
        return await conn.send(command(b"SET", name, b"1", b"NX", b"PX", ttl_ms)) is not None

    async def release(self, zset: str, members: list[str]) -> int:
        keys = [zset, zset[: -len(":exp")] + ":res"] if zset.endswith(":exp") else [zset]
        return int(await self._client().evalsha(_RELEASE, [HELD_KEY, SWEPT_KEY, *keys], members))

    def settle_lost(self, settlements: list[dict[str, Any]]) -> int:
        """Apply the settlements of calls answered by a process that died (from its spool; blocking, for
        the spool's thread). Returns how many budget counters took one."""
        import redis

        client = redis.Redis.from_url(self.url)
        script = client.register_script(SETTLE_LOST_LUA)
        applied = 0
        with client.pipeline(transaction=False) as pipe:
            for item in settlements:
                keys = [SWEPT_KEY]
                for key in item["keys"]:
                    keys += [key, key + ":res", key + ":exp"]
                script(keys=keys, args=[item["slot"], int(item["nanos"])], client=pipe)
            applied = sum(int(n) for n in pipe.execute())
        client.close()
        return applied


# --- in-process backend (embedded default: one process) ---------------------------------------------


class LocalLimiter:
    def __init__(self) -> None:
        self.buckets: dict[str, dict[int, int]] = {}
        self.parallel: dict[str, dict[str, int]] = {}
        self.spent: dict[str, int] = {}
        self.reserved: dict[str, dict[str, tuple[int, int]]] = {}

    def _sum(self, name: str, now_s: int) -> tuple[int, int]:
        bucket = self.buckets.setdefault(name, {})
        total, oldest = 0, 0
        for sec in list(bucket):
            if sec <= now_s - WINDOW:
                del bucket[sec]
            else:
                total += bucket[sec]
                oldest = sec if oldest == 0 or sec < oldest else oldest
        return total, oldest

    def _reserved_total(self, key: str, now_ms: int) -> int:
        entries = self.reserved.setdefault(key, {})
        for rid in [r for r, (_amt, exp) in entries.items() if exp <= now_ms]:
            del entries[rid]
        return sum(amt for amt, _exp in entries.values())

    async def admit(self, request_id, rates, tokens, parallel, budgets, reserve_nanos, cache_key="", hold_ms=0):
        # No await between check and record: atomic on the event loop. (No cache_key lookup here: without
        # Redis the prompt cache is an in-process store, read directly.)
        now_ms = int(time.time() * 1000)
        now_s = now_ms // 1000
        usage = []
        deny = None
        for i, r in enumerate(rates):
            used_r, oldest = self._sum(f"{r.scope}:r", now_s)
            used_t, _ = self._sum(f"{r.scope}:t", now_s)
            usage.append((used_r, used_t, oldest))
            if deny is None and r.rpm and used_r + 1 > r.rpm:
                deny = ("rpm", i + 1, (oldest + WINDOW - now_s) if oldest else 1)
            if deny is None and r.tpm and used_t + tokens > r.tpm and used_t > 0:
                deny = ("tpm", i + 1, WINDOW)
        if parallel:
            slots = self.parallel.setdefault(parallel[0], {})
            for rid in [rid for rid, expires in slots.items() if expires <= now_ms]:
                del slots[rid]
            if deny is None and len(slots) >= parallel[1]:
                deny = ("parallel", 0, 1)
        for i, b in enumerate(budgets):
            if b.key not in self.spent:
                return _decide(
                    0, "seed", i + 1, 0, usage, request_id, rates, tokens, parallel, budgets, reserve_nanos, now_ms
                )
            reserved = self._reserved_total(b.key, now_ms)
            spent = self.spent.get(b.key, 0)
            if deny is None and b.hard and spent + reserved + reserve_nanos > b.limit_nanos:
                deny = ("budget", i + 1, spent)
        if deny is not None:
            return _decide(
                0,
                deny[0],
                deny[1],
                deny[2],
                usage,
                request_id,
                rates,
                tokens,
                parallel,
                budgets,
                reserve_nanos,
                now_ms,
            )
        for r in rates:
            self.buckets[f"{r.scope}:r"][now_s] = self.buckets[f"{r.scope}:r"].get(now_s, 0) + 1
            self.buckets[f"{r.scope}:t"][now_s] = self.buckets[f"{r.scope}:t"].get(now_s, 0) + tokens
        expires = now_ms + (hold_ms or STALE_MS)
        if parallel:
            self.parallel[parallel[0]][request_id] = expires
        for b in budgets:
            if reserve_nanos:
                self.reserved[b.key][request_id] = (reserve_nanos, expires)
        return _decide(
            1, "", 0, 0, usage, request_id, rates, tokens, parallel, budgets, reserve_nanos, now_ms, expires - now_ms
        )

    async def settle(self, reservation: Reservation, actual_tokens: int, actual_nanos: int) -> list[tuple[int, int]]:
        delta = actual_tokens - reservation.tokens_reserved
        for r in reservation.rates:
            bucket = self.buckets.setdefault(f"{r.scope}:t", {})
            if reservation.admitted_s in bucket:  # see SETTLE_LUA: correct the bucket it was counted in
                bucket[reservation.admitted_s] += delta
        if reservation.parallel_key:
            self.parallel.get(reservation.parallel_key, {}).pop(reservation.request_id, None)
        out = []
        for b in reservation.budgets:
            self.reserved.get(b.key, {}).pop(reservation.request_id, None)
            before = self.spent.get(b.key)
            if before is None:
                out.append((0, 0))
                continue
            self.spent[b.key] = before + actual_nanos
            out.append((before, before + actual_nanos))
        return out

    # One process holds everything: nothing is lost unless the process is, and then all of it is.

    async def orphans(self, key: str) -> dict[str, int]:
        return {}

    async def seed(self, key: str, ledger_nanos: int, stored: list[str], delay_ms: int) -> float:
        self.spent.setdefault(key, ledger_nanos)
        return 0.0


_limiter: RedisLimiter | LocalLimiter | None = None


def limiter() -> RedisLimiter | LocalLimiter:
    global _limiter
    if _limiter is None:
        _limiter = RedisLimiter(settings.REDIS_URL) if settings.REDIS_URL else LocalLimiter()
    return _limiter
