-- Convergo's size prelude: shared by merge.lua, read.lua, repair.lua,
-- usage.lua and purge.lua, which the store builds as their first line
-- (the shebang), then this file, then their own body (scripts.go). It
-- reads record blobs (encoding.go) and computes the length of
-- crdt.EncodeRecord of the record a blob holds (cborsize; fsize and rsize
-- give it from a record's parts, as merge.lua keeps them); usagehash reads
-- a usage hash, as the scripts that keep usage do.

local byte, sub = string.byte, string.sub
local sunpack = struct.unpack
local ZERO = string.rep('\0', 13) -- the zero stamp: wall 0, logical 0, no replica
local TWO32 = 4294967296

local function malformed(what)
  error('convergo:malformed ' .. what)
end

-- hsize is the size of a CBOR head with argument x.
local function hsize(x)
  if x < 24 then return 1 end
  if x < 256 then return 2 end
  if x < 65536 then return 3 end
  if x < TWO32 then return 5 end
  return 9
end

-- ssize is the size of the CBOR array [wall, logical, replica] of the stamp
-- at position p of s (a field's array adds its value's bytes; the array
-- head is one byte either way).
local function ssize(s, p)
  local w1, w2, l = sunpack('>I4I4I4', s, p)
  local rl = byte(s, p + 12)
  return 1 + hsize(w1 * TWO32 + w2) + hsize(l) + hsize(rl) + rl
end

-- fsize is the size of one field in the record's CBOR map: its name of nl
-- bytes as the key, then the array of the stamp at position q of s and the
-- value's vlen bytes (0 for an unset).
local function fsize(s, q, nl, vlen)
  return hsize(nl) + nl + ssize(s, q) + vlen
end

-- rsize is the length of crdt.EncodeRecord of the record id whose delete
-- stamp is del (its bytes) and which has nf fields whose fsize add up to
-- fs: the map {1: id, 2: delete stamp unless zero, 3: {name: field}
-- unless empty}.
local function rsize(id, del, nf, fs)
  local size = 1 + 1 + hsize(#id) + #id
  if del ~= ZERO then size = size + 1 + ssize(del, 1) end
  if nf > 0 then size = size + 1 + hsize(nf) + fs end
  return size
end

-- cborsize is the length of crdt.EncodeRecord of the record in blob s of
-- record id. It walks the blob once without copying its fields.
local function cborsize(id, s)
  local n = #s
  if n < 22 or byte(s, 1) ~= 1 then malformed('record header') end
  local p = 23 + byte(s, 22)
  if p - 1 > n then malformed('stamp') end
  local nf, fs = 0, 0
  while p <= n do
    if p + 1 > n then malformed('field name') end
    local nl = byte(s, p) * 256 + byte(s, p + 1)
    local q = p + 2 + nl -- the stamp
    if q + 12 > n then malformed('field stamp') end
    local e = q + 13 + byte(s, q + 12) -- the flag
    if e > n then malformed('field flag') end
    local flag = byte(s, e)
    local vlen = 0
    if flag == 1 then
      if e + 4 > n then malformed('value length') end
      local b1, b2, b3, b4 = byte(s, e + 1, e + 4)
      vlen = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
      p = e + 5 + vlen
      if p - 1 > n then malformed('value') end
    elseif flag == 0 then
      p = e + 1
    else
      malformed('field flag')
    end
    fs = fs + fsize(s, q, nl, vlen)
    nf = nf + 1
  end
  return rsize(id, sub(s, 10, 22 + byte(s, 22)), nf, fs)
end

-- usagehash returns the records and bytes of the usage hash at key, or
-- nil when it lacks either or either is not a whole number (unsound).
local function usagehash(key)
  local u = redis.call('HMGET', key, 'n', 'b')
  if u[1] and u[2] and string.match(u[1], '^%d+$') and string.match(u[2], '^%d+$') then
    return tonumber(u[1]), tonumber(u[2])
  end
  return nil
end
