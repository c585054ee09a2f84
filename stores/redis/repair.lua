#!lua
-- Convergo's repair script: rebuilds a collection's log and head from its
-- records (Store.Repair, convergo repair).
--
-- KEYS[1]  <prefix>{<collection>}:seq  string: the collection's head
-- KEYS[2]  <prefix>{<collection>}:log  zset: member record id, score seq
-- KEYS[3]  <prefix>{<collection>}:r    hash: record id -> record blob
-- KEYS[4]  <prefix>{<collection>}:usage  hash: n records, b bytes;
--          counted again from the records kept
-- ARGV[1]  largest sequence number (2^53)
--
-- Returns {records, lost, head}.
--
-- size.lua comes before this body: it defines cborsize, sunpack, TWO32.

local maxSeq = tonumber(ARGV[1])
local lost = 0
local types = {}
for i, want in ipairs({'string', 'zset', 'hash', 'hash'}) do
  local t = redis.call('TYPE', KEYS[i]).ok
  types[i] = t
  if t ~= 'none' and t ~= want then
    redis.call('DEL', KEYS[i])
    if i == 3 then lost = lost + 1 end
    types[i] = 'none'
  end
end

-- Every seq handed out so far is at most base.
local base = 0
if types[1] == 'string' then
  local raw = redis.call('GET', KEYS[1])
  if string.match(raw, '^%d+$') then base = tonumber(raw) end
end
if types[2] == 'zset' then
  local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if top[2] and tonumber(top[2]) > base then base = tonumber(top[2]) end
end

-- Read every record; drop the unreadable ones.
local recs = {}
local bytes = 0
local cursor = '0'
repeat
  local res = redis.call('HSCAN', KEYS[3], cursor, 'COUNT', 1000)
  cursor = res[1]
  local kv = res[2]
  for i = 1, #kv, 2 do
    local id, blob = kv[i], kv[i + 1]
    local ok, size = pcall(cborsize, id, blob)
    if ok then
      bytes = bytes + size
      local hi, lo = sunpack('>I4I4', blob, 2)
      local seq = hi * TWO32 + lo
      if seq > base then base = seq end
      recs[#recs + 1] = {id = id, seq = seq, blob = blob}
    else
      lost = lost + 1
      redis.call('HDEL', KEYS[3], id)
    end
  end
until cursor == '0'

if base + #recs > maxSeq then
  error('convergo:seq-exhausted repair of ' .. #recs .. ' records past ' .. string.format('%.0f', base))
end

-- Renumber in the order of the old seqs, ties by id bytewise, above base.
table.sort(recs, function(a, b)
  if a.seq ~= b.seq then return a.seq < b.seq end
  local x, y = a.id, b.id
  local n = math.min(#x, #y)
  for i = 1, n do
    local p, q = string.byte(x, i), string.byte(y, i)
    if p ~= q then return p < q end
  end
  return #x < #y
end)
redis.call('DEL', KEYS[2])
local chunk = 256
for first = 1, #recs, chunk do
  local hargs, zargs = {}, {}
  for j = first, math.min(first + chunk - 1, #recs) do
    local r = recs[j]
    local seq = base + j
    local blob = string.sub(r.blob, 1, 1) .. struct.pack('>I4I4', math.floor(seq / TWO32), seq % TWO32) .. string.sub(r.blob, 10)
    hargs[#hargs + 1] = r.id
    hargs[#hargs + 1] = blob
    zargs[#zargs + 1] = string.format('%.0f', seq)
    zargs[#zargs + 1] = r.id
  end
  redis.call('HSET', KEYS[3], unpack(hargs))
  redis.call('ZADD', KEYS[2], unpack(zargs))
end
local head = base + #recs
redis.call('SET', KEYS[1], string.format('%.0f', head))
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], 'n', string.format('%.0f', #recs), 'b', string.format('%.0f', bytes))
return {#recs, lost, head}
