-- Claims a name for an owner, or renews the owner's claim; a claim lapses after its time
-- to live unless renewed.
--
-- KEYS[1]  the claim
-- ARGV     owner, time to live (ms)
-- Returns  {'mine'} when the claim is the owner's now, else {'held', the owner holding it}

local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {'held', holder}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'mine'}
