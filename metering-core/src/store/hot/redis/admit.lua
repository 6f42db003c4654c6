-- One decision, atomically: the replay check, every window, the credits, the commit.
-- It decides exactly as the reference decision (metering-core/src/admit.rs) does.
--
-- KEYS[1]  the tenant's counters (a hash; absent = not loaded)
-- KEYS[2]  the remembered decision for this event_id
-- ARGV     now, remember (0|1), fingerprint, remember_until, remember_ms, denial
--          (0 none | 1 suspended | 2 premium), allowance, overdraft, cost, period start,
--          oldest period kept, counters ttl (s), number of limits, then per limit:
--          kind (c calendar | s smooth), field, max, window end (c) or interval (s),
--          window code, oldest window kept (c)
-- Returns  {'u'} not loaded | {'c'} conflict | {'r', decision} replay | {'d', decision}
--          where decision = allowed;reason;charged;remaining;retry;code:max:left:reset,...
-- Numbers are whole microseconds or credits below 2^53, exact in Lua's doubles, and are
-- formatted with %d (tostring would round them).

local counters, seen_key = KEYS[1], KEYS[2]
if redis.call('EXISTS', counters) == 0 then
  return {'u'}
end
local now = tonumber(ARGV[1])
if ARGV[2] == '1' then
  local seen = redis.call('GET', seen_key)
  if seen then
    local until_, fingerprint, decision = string.match(seen, '^(%-?%d+);([^;]*);(.*)$')
    if until_ and tonumber(until_) > now then
      if fingerprint == ARGV[3] then
        return {'r', decision}
      end
      return {'c'}
    end
  end
end

local function fmt(x)
  return string.format('%d', x)
end

-- Whole seconds from now until t, rounded up, zero if t is past.
local function secs_until(t)
  if t <= now then
    return 0
  end
  return math.ceil((t - now) / 1000000)
end

-- Deletes the fields starting with prefix whose start is older than keep.
local function prune(prefix, keep)
  for _, field in ipairs(redis.call('HKEYS', counters)) do
    if string.sub(field, 1, #prefix) == prefix then
      local start = tonumber(string.sub(field, #prefix + 1))
      if start and start < keep then
        redis.call('HDEL', counters, field)
      end
    end
  end
end

local n = tonumber(ARGV[13])
local checks = {}
local retry = nil
for i = 1, n do
  local b = 13 + (i - 1) * 6
  local kind, field, max, param = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local stored = redis.call('HGET', counters, field)
  local c = {kind = kind, field = field, max = max, code = ARGV[b + 5], keep = tonumber(ARGV[b + 6])}
  if kind == 'c' then
    local count = tonumber(stored or '0')
    c.reset = secs_until(param)
    if count < max then
      c.fits, c.left = true, max - count - 1
    else
      c.fits, c.left, c.retry = false, 0, math.max(c.reset, 1)
    end
  else
    local burst = param * max
    local tat = now
    if stored then
      tat = math.max(tonumber(stored), now)
    end
    local next_tat = tat + param
    local function status(backlog)
      local left = (burst - backlog) / param
      if left >= 0 then left = math.floor(left) else left = math.ceil(left) end
      return math.min(math.max(left, 0), max), secs_until(now + backlog)
    end
    if next_tat - now <= burst then
      c.fits, c.next = true, next_tat
      c.left, c.reset = status(next_tat - now)
    else
      c.fits, c.retry = false, math.max(secs_until(next_tat - burst), 1)
      c.left, c.reset = status(tat - now)
    end
  end
  if c.retry then
    retry = math.max(retry or 0, c.retry)
  end
  checks[i] = c
end

local used_field, granted_field = 'u:' .. ARGV[10], 'g:' .. ARGV[10]
local used = tonumber(redis.call('HGET', counters, used_field) or '0')
local granted = tonumber(redis.call('HGET', counters, granted_field) or '0')
local allowance, overdraft, cost = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local remaining = allowance + granted - used
local reason = ARGV[6]
if reason == '0' then
  if retry then
    reason = '3'
  elseif remaining - cost < -overdraft then
    reason = '4'
  end
end

local windows = {}
local decision
if reason == '0' then
  for i, c in ipairs(checks) do
    if c.kind == 'c' then
      if redis.call('HINCRBY', counters, c.field, 1) == 1 then
        prune(string.sub(c.field, 1, 2), c.keep)
      end
    else
      redis.call('HSET', counters, c.field, fmt(c.next))
    end
    windows[i] = c.code .. ':' .. fmt(c.max) .. ':' .. fmt(c.left) .. ':' .. fmt(c.reset)
  end
  if redis.call('HEXISTS', counters, used_field) == 0 then
    prune('u:', tonumber(ARGV[11]))
    prune('g:', tonumber(ARGV[11]))
  end
  redis.call('HINCRBY', counters, used_field, cost)
  redis.call('EXPIRE', counters, ARGV[12])
  decision = '1;0;' .. fmt(cost) .. ';' .. fmt(remaining - cost) .. ';-;' .. table.concat(windows, ',')
else
  for i, c in ipairs(checks) do
    local left = c.left
    if c.fits then
      left = math.min(left + 1, c.max)
    end
    windows[i] = c.code .. ':' .. fmt(c.max) .. ':' .. fmt(left) .. ':' .. fmt(c.reset)
  end
  local after = '-'
  if reason == '3' then
    after = fmt(retry)
  end
  decision = '0;' .. reason .. ';0;' .. fmt(math.max(remaining, -overdraft)) .. ';' .. after .. ';'
    .. table.concat(windows, ',')
end
if ARGV[2] == '1' then
  redis.call('SET', seen_key, ARGV[4] .. ';' .. ARGV[3] .. ';' .. decision, 'PX', ARGV[5])
end
return {'d', decision}
