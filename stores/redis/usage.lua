#!lua
-- Convergo's usage script: a collection's stores.Usage, its records
-- (tombstones included) and the sum of their CBOR-encoded sizes. The merge
-- script keeps the usage hash in the step that writes the records; this
-- script reads it, and counts the collection when there is none (written
-- before usage existed) or it is unsound or stale (merge.lua says when).
--
-- KEYS[1]  <prefix>{<collection>}:r      hash: record id -> record blob
-- KEYS[2]  <prefix>{<collection>}:usage  hash: n records, b bytes
--
-- Returns {records, bytes}. Counting walks every record in one step
-- (HSCAN inside the script), which blocks Redis meanwhile, about as long
-- as Repair does, once per collection. An unreadable record counts as a
-- record of its stored length: it takes that room until a write replaces
-- it or Repair drops it. A key of the wrong type fails with
-- convergo:corrupt (Repair deletes it).
--
-- size.lua comes before this body: it defines cborsize.

local types = {}
for i = 1, 2 do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'none' and t ~= 'hash' then
    error('convergo:corrupt key ' .. KEYS[i] .. ' is a ' .. t .. ', not a hash')
  end
  types[i] = t
end
if types[2] == 'hash' then
  local n, b = usagehash(KEYS[2])
  if n then return {n, b} end
end
local n, bytes = 0, 0
local cursor = '0'
repeat
  local res = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 1000)
  cursor = res[1]
  local kv = res[2]
  for i = 1, #kv, 2 do
    local ok, size = pcall(cborsize, kv[i], kv[i + 1])
    if not ok then size = #kv[i + 1] end
    n = n + 1
    bytes = bytes + size
  end
until cursor == '0'
-- A collection never written keeps no hash: the merge script starts one.
if n > 0 or types[2] == 'hash' then
  redis.call('HSET', KEYS[2], 'n', string.format('%.0f', n), 'b', string.format('%.0f', bytes))
end
return {n, bytes}
