#!lua
-- Convergo's purge script: writes what stores.PurgeRecord made of records
-- that Go read, each only if it is still as read (a compare-and-set per
-- record), so a change that Apply committed in between is never lost.
--
-- KEYS[1]  <prefix>{<collection>}:r      hash: record id -> record blob
-- KEYS[2]  <prefix>{<collection>}:log    zset: record id -> seq
-- KEYS[3]  <prefix>{<collection>}:usage  hash: n records, b bytes
-- KEYS[4]  <prefix>{<collection>}:meta   hash: n, the collection's own
--          epoch counter
-- KEYS[5]  <prefix>{convergo}:epoch      the store-wide epoch counter;
--          absent on a cluster, where it is in another slot (Go checks
--          it before the call)
-- ARGV[1]  the read horizon (a seq)
-- ARGV[2]  the collection's own epoch counter as read with the horizon's
--          epoch ('' when missing)
-- ARGV[3]  the store-wide counter as read ('' when missing)
-- ARGV[4..] per record, five arguments: id, the blob read, the purged
--          blob ('' to remove the record and its log entry), the CBOR
--          size of the record read and of the purged one
--
-- Returns {0} and writes nothing when an epoch counter is no longer the
-- value read: the horizon's positions are of an epoch that ended.
-- Otherwise 1 and then, per record, 1 when it was written and 0 when it
-- had changed (it is left to a later purge). A record read is at or below the read
-- horizon, and its blob holds its seq: an equal blob is at the same seq.
-- Usage follows when the usage hash is sound; an unsound or stale one is
-- left for usage.lua to count.
--
-- size.lua comes before this body: it defines usagehash.

for i = 1, 3 do
  local t = redis.call('TYPE', KEYS[i]).ok
  local want = (i == 2) and 'zset' or 'hash'
  if t ~= 'none' and t ~= want then
    error('convergo:corrupt key ' .. KEYS[i] .. ' is a ' .. t .. ', not a ' .. want)
  end
end
if (redis.call('HGET', KEYS[4], 'n') or '') ~= ARGV[2] then
  return {0}
end
if KEYS[5] and (redis.call('GET', KEYS[5]) or '') ~= ARGV[3] then
  return {0}
end
local read = tonumber(ARGV[1])
local out = {1}
local records, bytes = 0, 0
for i = 4, #ARGV, 5 do
  local id, old, new = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local score = redis.call('ZSCORE', KEYS[2], id)
  if redis.call('HGET', KEYS[1], id) == old and score and tonumber(score) <= read then
    if new == '' then
      redis.call('HDEL', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      records = records + 1
    else
      redis.call('HSET', KEYS[1], id, new)
    end
    bytes = bytes + tonumber(ARGV[i + 3]) - tonumber(ARGV[i + 4])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
-- Deletes shrink a hash's or zset's table only once it is under 10% full,
-- and the shrink is an incremental rehash that advances one step per
-- lookup of the key: a collection that nobody reads after a large purge
-- would keep both tables, the old one of its peak size, for good (Redis
-- 7.0; a reload rebuilds them). So each removal pays for a few steps.
for _ = 1, 4 * records do
  redis.call('HEXISTS', KEYS[1], '')
  redis.call('ZSCORE', KEYS[2], '')
end
if records > 0 or bytes ~= 0 then
  local n, b = usagehash(KEYS[3])
  if n then
    redis.call('HSET', KEYS[3], 'n', string.format('%.0f', n - records),
      'b', string.format('%.0f', b - bytes))
  end
end
return out
