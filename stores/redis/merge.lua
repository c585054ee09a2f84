#!lua
-- Convergo's merge script: applies a batch of changes to one collection in
-- one atomic step. See doc.go ("# The script") for the record layout and why
-- this is safe; encoding.go writes and reads the same layout in Go.
--
-- KEYS[1]  <prefix>{<collection>}:seq  string: the collection's head
-- KEYS[2]  <prefix>{<collection>}:log  zset: member record id, score seq
-- KEYS[3]  <prefix>{<collection>}:r    hash: record id -> record blob
-- KEYS[4]  <prefix>{<collection>}:usage  hash: n records, b bytes of their
--          CBOR encodings (stores.Usage)
-- ARGV[1]  notification channel
-- ARGV[2]  collection name (for the notification)
-- ARGV[3]  largest CBOR-encoded record, in bytes
-- ARGV[4]  most fields in one record
-- ARGV[5]  largest sequence number (2^53: ZSET scores are doubles)
-- ARGV[6]  the number of changes, n
-- ARGV[7] .. ARGV[6+2n]  pairs of record id and change blob
--
-- Then, when the caller merged the changes in Go (doc.go, "# Merging in
-- Go"), the compare-and-set section, about the batch's records in the
-- order in which the changes first name them (r of them):
--
-- ARGV[7+2n]  the head Go foresaw ('' when none)
-- ARGV[8+2n]  the verdicts: one byte per change, 1 when it altered its
--             record as Go merged it, 0 when not
-- ARGV[9+2n]  per record 5 bytes: how Go read it (0 absent, 1 a readable
--             blob, 2 an unreadable one, which the merge replaces) and the
--             change of its CBOR size, a big-endian int32
-- then per record two arguments: the blob Go read ('' when absent) and
--             the merged blob ('' when no change altered it), with the
--             seq it gets when the head is the one foreseen and every
--             record is as read (the script writes it as it is; else it
--             puts the right seq into it)
--
-- A record still stored exactly as Go read it is written as Go merged it:
-- its changes take their seqs in batch order as the verdicts say, and Go
-- has checked its limits and worked out its lost fields. A record that
-- changed since (another instance wrote it) is merged here from the
-- changes, as without the section. Go sends the section without the
-- change blobs (each ''): then a record that changed since makes the
-- script refuse the call, before it writes anything, with the error
-- CONVERGO-STALE, and Go sends the call again without the section.
--
-- Returns {result_1, result_2, ..., head_state, head_raw, damaged, lost}:
-- one integer per change, its new seq when it changed its record (at
-- least 1) and minus the record's seq when it did not (0 for a record
-- that does not exist); then what the script found damaged and repaired:
-- head_state 0 when the head was sound, 1 when it was unreadable, 2 when
-- it was below the highest seq in the log (set back), with head_raw the
-- value it had; damaged the ids of stored records that were unreadable
-- and that this batch's changes replaced; and lost, pairs of a change's
-- index (from 1) and the name of one of its fields that the record does
-- not hold as the change wrote it right after its merge (crdt.LostFields;
-- unsorted: Lua's string order depends on the server's locale, so the
-- caller sorts). With the compare-and-set section one more item
-- follows: the records (their indexes, from 1) that the script merged
-- itself, whose changes alone lost lists.
--
-- The script checks every key's type and the head, reads and merges
-- everything first, and writes only at the end, so every error (malformed
-- input, a record over the limits, a key of the wrong type) is raised
-- before the first write: Lua scripts have no rollback.
--
-- Usage is kept in the same step: the script adds the records it creates
-- and the change in their encoded sizes. It keeps usage only when the
-- usage hash is sound, or when the collection has no records yet (it
-- starts at zero). Otherwise it leaves the hash alone when there is none
-- (a collection written before usage existed) or its fields are unsound,
-- and marks it stale (n = 'stale') when this batch replaces a damaged
-- record, whose size in usage is unknown; usage.lua counts the collection
-- the next time it is read. Usage is derived data: unsound usage is never
-- a reason to fail a write, but a usage key of another type is, like any
-- key of the collection (Repair deletes it).

-- size.lua comes before this body: it defines byte, sub, sunpack, ZERO,
-- TWO32, malformed, hsize, fsize, rsize and cborsize.

local fmt, concat = string.format, table.concat
local spack = struct.pack

-- bcmp compares two byte strings lexicographically byte by byte, like Go's
-- bytes.Compare. Lua's own < on strings uses strcoll, whose order depends on
-- the server's locale, so it is never used on strings here.
local function bcmp(a, b)
  if a == b then return 0 end
  local la, lb = #a, #b
  local n = la
  if lb < n then n = lb end
  local i = 1
  while i + 63 <= n and sub(a, i, i + 63) == sub(b, i, i + 63) do
    i = i + 64
  end
  while i <= n do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
    i = i + 1
  end
  if la < lb then return -1 end
  if la > lb then return 1 end
  return 0
end

-- A stamp is 8 bytes of wall time and 4 of logical counter, big-endian,
-- then a length byte and the replica id. scmp compares the stamp at
-- position pa of a with the one at pb of b as crdt.Stamp.Compare does:
-- wall time (as two 32-bit halves), logical counter, then the replica ids
-- bytewise. Stamps are compared where they lie, inside a field's bytes,
-- without cutting them out.
local function scmp(a, pa, b, pb)
  local a1, a2, a3 = sunpack('>I4I4I4', a, pa)
  local b1, b2, b3 = sunpack('>I4I4I4', b, pb)
  if a1 ~= b1 then
    if a1 < b1 then return -1 end
    return 1
  end
  if a2 ~= b2 then
    if a2 < b2 then return -1 end
    return 1
  end
  if a3 ~= b3 then
    if a3 < b3 then return -1 end
    return 1
  end
  return bcmp(sub(a, pa + 13, pa + 12 + byte(a, pa + 12)), sub(b, pb + 13, pb + 12 + byte(b, pb + 12)))
end

-- A field is kept as its bytes in the blob, from its name length to the
-- end of its value: name length (2 bytes), name, stamp, flag (0 unset, 1
-- value), and for a value its length (4 bytes) and bytes. serialize copies
-- those bytes unchanged; soff gives the position of the stamp in them.
local function soff(raw)
  return 3 + byte(raw, 1) * 256 + byte(raw, 2)
end

-- parse reads a record blob: a version byte (1), the sequence number (8
-- bytes), the delete stamp, then fields. A record is a table {seq, del
-- (the delete stamp's bytes), f, n, nf, fs, size, dirty, src} where
-- f[1..n] are the names of the record's fields in its order and f[name]
-- their bytes, or false for a field a delete removed (its name keeps its
-- place), nf is the number of fields that are not false and fs the sum of
-- their fsize (so the record's encoded size is known without walking it
-- again); src is blob s while the record is exactly what s holds (cleared
-- by a merge into it). Tables are few on purpose, and made with every key
-- they get (adding one grows the table): making them is most of a small
-- script's time.
local function parse(s)
  local n = #s
  if n < 22 or byte(s, 1) ~= 1 then malformed('record header') end
  local hi, lo = sunpack('>I4I4', s, 2)
  local p = 23 + byte(s, 22)
  if p - 1 > n then malformed('stamp') end
  local del = sub(s, 10, p - 1)
  local f, k, fs = false, 0, 0
  while p <= n do
    local p0 = p
    if p + 1 > n then malformed('field name') end
    local n1, n2 = byte(s, p, p + 1)
    local nl = n1 * 256 + n2
    local q = p + 2 + nl -- the stamp
    if q + 12 > n then malformed('field stamp') end
    local e = q + 13 + byte(s, q + 12) -- the flag
    if e > n then malformed('field flag') end
    local flag, b1, b2, b3, b4 = byte(s, e, e + 4) -- and the value's length
    local vlen = 0
    if flag == 1 then
      if e + 4 > n then malformed('value length') end
      vlen = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
      p = e + 5 + vlen
      if p - 1 > n then malformed('value') end
    elseif flag == 0 then
      p = e + 1
    else
      malformed('field flag')
    end
    local name = sub(s, p0 + 2, q - 1)
    if k == 0 then
      -- The table made with its first field, sized for it.
      f = {name, [name] = sub(s, p0, p - 1)}
    else
      if f[name] then malformed('duplicate field') end
      f[k + 1] = name
      f[name] = sub(s, p0, p - 1)
    end
    k = k + 1
    fs = fs + fsize(s, q, nl, vlen)
  end
  return {seq = hi * TWO32 + lo, del = del, f = f or {}, n = k, nf = k, fs = fs, size = false, dirty = false, src = s}
end

-- rawsize is the fsize of field bytes raw (as parse keeps them).
local function rawsize(raw)
  local nl = byte(raw, 1) * 256 + byte(raw, 2)
  local q = 3 + nl
  local e = q + 13 + byte(raw, q + 12) -- the flag
  local vlen = 0
  if byte(raw, e) == 1 then vlen = #raw - e - 4 end
  return fsize(raw, q, nl, vlen)
end

-- beats is crdt.Field.beats for field bytes f (its stamp at fo) and g: the
-- larger stamp wins; at equal stamps an unset beats a value, and
-- otherwise the larger value bytes win.
local function beats(f, fo, g)
  local go = soff(g)
  local c = scmp(f, fo, g, go)
  if c ~= 0 then return c > 0 end
  local fe, ge = fo + 13 + byte(f, fo + 12), go + 13 + byte(g, go + 12) -- the flags
  local fv, gv = byte(f, fe) == 1, byte(g, ge) == 1
  if not fv then return gv end
  if not gv then return false end
  return bcmp(sub(f, fe + 5), sub(g, ge + 5)) > 0
end

-- merge is crdt.Record.Merge: it merges change d into record r and reports
-- whether r changed.
local function merge(r, d)
  local changed = false
  local rf, df = r.f, d.f
  r.src = false
  -- The zero stamp beats nothing.
  if d.del ~= ZERO and scmp(d.del, 1, r.del, 1) > 0 then
    r.del = d.del
    changed = true
    for i = 1, r.n do
      local raw = rf[rf[i]]
      if raw and scmp(raw, soff(raw), r.del, 1) <= 0 then
        rf[rf[i]] = false
        r.nf = r.nf - 1
        r.fs = r.fs - rawsize(raw)
      end
    end
  end
  -- Without a delete every field of a change is visible: Store.Apply
  -- sends no field with the zero stamp (checkRecord refuses them), so
  -- the common case needs no comparison.
  local nodel = r.del == ZERO
  for i = 1, d.n do
    local name = df[i]
    local raw = df[name]
    local so = soff(raw)
    if nodel or scmp(raw, so, r.del, 1) > 0 then
      local cur = rf[name]
      if not cur or beats(raw, so, cur) then
        if cur then
          r.fs = r.fs - rawsize(cur)
        else
          r.nf = r.nf + 1
          if cur == nil then
            r.n = r.n + 1
            rf[r.n] = name
          end
        end
        rf[name] = raw
        r.fs = r.fs + rawsize(raw)
        changed = true
      end
    end
  end
  return changed
end

-- lost appends to list out, as pairs of i and name, the fields of change
-- i, d, that record r, into which d was just merged, does not hold as d
-- wrote them: a newer or tie-winning field, or none at all (a delete
-- dropped it). A field's bytes hold its name, stamp and value, so equal
-- bytes mean the same field.
local function lost(out, i, r, d)
  local rf, df = r.f, d.f
  for j = 1, d.n do
    local name = df[j]
    if rf[name] ~= df[name] then
      out[#out + 1] = i
      out[#out + 1] = name
    end
  end
end

-- serialize writes the record blob: the header and delete stamp, then the
-- fields' bytes as they arrived, in the record's field order. A record
-- that is still exactly a blob (src: a new record's first change) is that
-- blob with its sequence number.
local function serialize(r)
  local seq = spack('>I4I4', math.floor(r.seq / TWO32), r.seq % TWO32)
  if r.src then
    return '\1' .. seq .. sub(r.src, 10)
  end
  local head = '\1' .. seq .. r.del
  local rf = r.f
  if r.n == 1 then
    return head .. (rf[rf[1]] or '')
  end
  local out = {head}
  for i = 1, r.n do
    local raw = rf[rf[i]]
    if raw then out[#out + 1] = raw end
  end
  return concat(out)
end

local function int(x)
  return fmt('%.0f', x)
end

-- Read and merge.

local maxBytes, maxFields, maxSeq = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local nchanges = tonumber(ARGV[6])
if not (maxBytes and maxFields and maxSeq and nchanges) or nchanges < 0 or nchanges ~= math.floor(nchanges)
    or #ARGV < 6 + 2 * nchanges then
  malformed('arguments')
end
-- Every key must have its type or not exist: a key of another type
-- (written by something else) would fail a write half-way.
local types = {}
for i, want in ipairs({'string', 'zset', 'hash', 'hash'}) do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'none' and t ~= want then
    error('convergo:corrupt key ' .. KEYS[i] .. ' is a ' .. t .. ', not a ' .. want)
  end
  types[i] = t
end
-- usageState: 'keep' (sound, or a new collection: add to it), 'none'
-- (leave it: no hash while records exist, or unsound fields), 'stale'
-- (mark it for a count).
local usageState, usageRecords, usageBytes = 'keep', 0, 0
if types[4] == 'none' then
  if types[3] ~= 'none' then usageState = 'none' end
else
  usageRecords, usageBytes = usagehash(KEYS[4])
  if not usageRecords then
    usageRecords, usageBytes, usageState = 0, 0, 'none'
  end
end
-- The head is at least the highest seq in the log: a head that is
-- unreadable or was set back must not hand out seqs again.
local rawHead = redis.call('GET', KEYS[1])
local head, headState = 0, 0
if rawHead then
  if string.match(rawHead, '^%d+$') then head = tonumber(rawHead) else headState = 1 end
end
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] then
  local t = tonumber(top[2])
  if t > head then
    if headState == 0 then headState = 2 end
    head = t
  end
elseif headState == 1 then
  head = 0
end
-- (maxSeq - head is exact; head + nchanges past 2^53 would round.)
if head < 0 or head > maxSeq or nchanges > maxSeq - head then
  error('convergo:seq-exhausted head ' .. int(head) .. ' cannot grow by ' .. int(nchanges) .. ' past ' .. int(maxSeq))
end

-- One HMGET reads every record the batch names.
local ids, at = {}, {}
for i = 1, nchanges do
  local id = ARGV[5 + 2 * i]
  if not at[id] then
    ids[#ids + 1] = id
    at[id] = #ids
  end
end
local stored = {}
if #ids > 0 then stored = redis.call('HMGET', KEYS[3], unpack(ids)) end

local state, order, out, damaged, lostf = {}, {}, {}, {}, {}

-- The compare-and-set section (doc.go, "# Merging in Go"), when the
-- caller merged the changes in Go against the blobs it read. A record (j
-- in the order of ids) still stored exactly as read is taken as Go merged
-- it: cseq[j] is its seq (a readable blob's own, else 0, then each new
-- one), cdirty[j] whether a change altered it. The others are merged
-- here, as without the section, and listed in fell. No table per record:
-- making them is a large share of a small script's time.
local cseq, cdirty, fell = {}, {}, false
local verdicts, info, cbase, foreseen
if #ARGV > 6 + 2 * nchanges then
  cbase = 6 + 2 * nchanges
  verdicts, info = ARGV[cbase + 2], ARGV[cbase + 3]
  if #ARGV ~= cbase + 3 + 2 * #ids or #verdicts ~= nchanges or #info ~= 5 * #ids then
    malformed('compare-and-set arguments')
  end
  -- The merged blobs hold the seqs they get when the head is as foreseen.
  foreseen = tonumber(ARGV[cbase + 1]) == head
  fell = {}
  for j = 1, #ids do
    local kind, exp, cur = byte(info, 5 * j - 4), ARGV[cbase + 2 + 2 * j], stored[j]
    local same
    if kind == 0 then same = not cur else same = cur == exp end
    if same then
      local seq = 0
      if kind == 1 then
        local hi, lo = sunpack('>I4I4', exp, 2)
        seq = hi * TWO32 + lo
      elseif kind == 2 then
        -- Unreadable as Go read it: the merge replaces it.
        damaged[#damaged + 1] = ids[j]
        if usageState == 'keep' then usageState = 'stale' end
      end
      cseq[j] = seq
    else
      fell[#fell + 1] = j
    end
  end
  -- Without the change blobs, only Go can merge: it sends the call again.
  if #fell > 0 and ARGV[8] == '' then
    return redis.error_reply('CONVERGO-STALE ' .. #fell .. ' of the records changed since they were read')
  end
end

for i = 1, nchanges do
  local id = ARGV[5 + 2 * i]
  local j = at[id]
  if cseq[j] then
    if byte(verdicts, i) == 1 then
      head = head + 1
      cseq[j] = head
      if not cdirty[j] then
        cdirty[j] = true
        order[#order + 1] = id
      end
      out[i] = head
    else
      out[i] = -cseq[j]
    end
  else
    local d = parse(ARGV[6 + 2 * i])
    local r = state[id]
    if r == nil then
      local blob = stored[at[id]]
      if blob then
        local ok
        ok, r = pcall(parse, blob)
        -- An unreadable stored record is lost: the change replaces it, and
        -- the caller reports it.
        if ok then
          -- r.size: what usage counts the record at now (false for a new one).
          if usageState == 'keep' then r.size = rsize(id, r.del, r.nf, r.fs) end
        else
          r = false
          damaged[#damaged + 1] = id
          if usageState == 'keep' then usageState = 'stale' end
        end
      else
        r = false
      end
    end
    if not r and d.del == ZERO then
      -- A record that does not exist yet (or was unreadable), and a change
      -- without a delete: merging the change into the empty record gives the
      -- change itself, field for field and in its order, so the change is
      -- the record (and its blob, with the seq, the record's blob).
      r = d
      state[id] = r
      if d.n > 0 then
        head = head + 1
        r.seq = head
        r.dirty = true
        order[#order + 1] = id
        out[i] = head
      else
        r.seq = 0
        out[i] = 0
      end
    else
      if not r then
        r = {seq = 0, del = ZERO, f = {}, n = 0, nf = 0, fs = 0, size = false, dirty = false, src = false}
      end
      state[id] = r
      if merge(r, d) then
        head = head + 1
        r.seq = head
        if not r.dirty then
          r.dirty = true
          order[#order + 1] = id
        end
        out[i] = head
      else
        out[i] = -r.seq
      end
      lost(lostf, i, r, d)
    end
  end
end

local blobs = {}
for k, id in ipairs(order) do
  local j = at[id]
  if cseq[j] then
    -- Go checked the limits and sized the record; the blob gets its seq.
    local merged = ARGV[cbase + 3 + 2 * j]
    if foreseen and #fell == 0 then
      blobs[k] = merged
    else
      local seq = cseq[j]
      blobs[k] = '\1' .. spack('>I4I4', math.floor(seq / TWO32), seq % TWO32) .. sub(merged, 10)
    end
    if usageState == 'keep' then
      usageBytes = usageBytes + sunpack('>i4', info, 5 * j - 3)
      if byte(info, 5 * j - 4) ~= 1 then usageRecords = usageRecords + 1 end
    end
  else
    local r = state[id]
    if r.nf > maxFields then
      error('convergo:too-large record ' .. id .. ' would have ' .. int(r.nf) .. ' fields, more than ' .. int(maxFields))
    end
    local size = rsize(id, r.del, r.nf, r.fs)
    if size > maxBytes then
      error('convergo:too-large record ' .. id .. ' would be ' .. int(size) .. ' bytes, more than ' .. int(maxBytes))
    end
    blobs[k] = serialize(r)
    if r.size then
      usageBytes = usageBytes + size - r.size
    else
      usageRecords = usageRecords + 1
      usageBytes = usageBytes + size
    end
  end
end

-- Write: nothing above has written, so an error above left no trace.

out[nchanges + 1] = headState
out[nchanges + 2] = rawHead or ''
-- Only a damaged record this batch writes is replaced; a change that
-- wrote nothing to it (no field, no delete) leaves it as it was, and it is
-- not reported.
local replaced = {}
for _, id in ipairs(damaged) do
  local j = at[id]
  if (cseq[j] and cdirty[j]) or (not cseq[j] and state[id].dirty) then replaced[#replaced + 1] = id end
end
out[nchanges + 3] = replaced
out[nchanges + 4] = lostf
if fell then out[nchanges + 5] = fell end
if #order == 0 then
  if headState ~= 0 then redis.call('SET', KEYS[1], int(head)) end
  return out
end
local chunk = 256
for first = 1, #order, chunk do
  local hargs, zargs = {}, {}
  for k = first, math.min(first + chunk - 1, #order) do
    local id = order[k]
    local seq = cseq[at[id]] or state[id].seq
    hargs[#hargs + 1] = id
    hargs[#hargs + 1] = blobs[k]
    zargs[#zargs + 1] = seq -- a score: Redis converts it exactly
    zargs[#zargs + 1] = id
  end
  redis.call('HSET', KEYS[3], unpack(hargs))
  redis.call('ZADD', KEYS[2], unpack(zargs))
end
redis.call('SET', KEYS[1], int(head))
if usageState == 'keep' then
  redis.call('HSET', KEYS[4], 'n', int(usageRecords), 'b', int(usageBytes))
elseif usageState == 'stale' then
  redis.call('HSET', KEYS[4], 'n', 'stale')
end
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. int(head))
return out
