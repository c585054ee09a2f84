#!lua flags=no-writes
-- Convergo's read script: one page of a collection's change log with the
-- records it names, read in one atomic step so that every record comes with
-- the sequence number the log lists it under.
--
-- KEYS[1]  <prefix>{<collection>}:log  zset: member record id, score seq
-- KEYS[2]  <prefix>{<collection>}:r    hash: record id -> record blob
-- ARGV[1]  the cursor: entries with a larger sequence number are returned
-- ARGV[2]  the most entries to return
--
-- Returns {id_1, blob_1, id_2, blob_2, ...} in ascending sequence order.

local ids = redis.call('ZRANGE', KEYS[1], '(' .. ARGV[1], '+inf', 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then return {} end
local blobs = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {}
for i = 1, #ids do
  out[2 * i - 1] = ids[i]
  out[2 * i] = blobs[i]
end
return out
