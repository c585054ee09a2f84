#!lua flags=no-writes
-- Convergo's read script: one page of a collection's change log with the
-- records it names, read in one atomic step so that every record comes with
-- the sequence number the log lists it under. The page is cut here, by
-- count and by the records' encoded size, so that Redis sends no more than
-- the page: it reads at most one record beyond it.
--
-- KEYS[1]  <prefix>{<collection>}:log  zset: member record id, score seq
-- KEYS[2]  <prefix>{<collection>}:r    hash: record id -> record blob
-- ARGV[1]  the cursor: entries with a larger sequence number are returned
-- ARGV[2]  the most entries to return (stores.PageLimit.Records)
-- ARGV[3]  the most bytes of CBOR-encoded records (stores.PageLimit.Bytes);
--          the first record is returned even when it alone is larger
--
-- Returns {more, id_1, blob_1, id_2, blob_2, ...} in ascending sequence
-- order; more is 1 when the log holds entries after the page. A damaged
-- entry ends the page: its blob is false when the log names a record the
-- hash lacks, or the blob as stored when it is unreadable; the caller
-- reports it (stores.ErrCorrupt) and returns the entries before it. A key
-- of the wrong type fails with convergo:corrupt.
--
-- size.lua comes before this body: it defines cborsize.

for i, want in ipairs({'zset', 'hash'}) do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'none' and t ~= want then
    error('convergo:corrupt key ' .. KEYS[i] .. ' is a ' .. t .. ', not a ' .. want)
  end
end
local limit, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
if not (limit and budget) or limit < 1 then malformed('arguments') end
local ids = redis.call('ZRANGE', KEYS[1], '(' .. ARGV[1], '+inf', 'BYSCORE', 'LIMIT', 0, limit + 1)
local out = {0}
local used = 0
for i = 1, #ids do
  if i > limit then
    out[1] = 1
    break
  end
  local id = ids[i]
  local blob = redis.call('HGET', KEYS[2], id)
  local ok, size = false, 0
  if blob then ok, size = pcall(cborsize, id, blob) end
  if not ok then
    out[2 * i], out[2 * i + 1] = id, blob
    if i < #ids then out[1] = 1 end
    break
  end
  if i > 1 and used + size > budget then
    out[1] = 1
    break
  end
  used = used + size
  out[2 * i], out[2 * i + 1] = id, blob
end
return out
