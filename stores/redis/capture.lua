#!lua
-- Convergo's capture script: turns what another program wrote into a plain
-- hash into stamped field changes, and (mode m) writes a merged record
-- back into it. See capture.go and doc.go ("# Capture").
--
-- KEYS[1]  the app's key (a hash or nothing)
-- KEYS[2]  its shadow: <prefix>{<tag>}:cs:<key>, a hash in the same slot:
--            =c collection; =d delete stamp; =l highest stamp it holds
--            (the clock of captured stamps); =p last captured stamp; =a
--            the captured stamp the sink acknowledged; v<name> the value
--            last captured or mirrored; s<name> its stamp
-- ARGV[1]  floor: the stamp (its time; no replica id) a capture may not
--          sort below: after the record's largest stamp at the capturing
--          server's wall time (capture.go, captureFloor)
-- ARGV[2]  collection
-- ARGV[3]  the replica id of captured stamps
-- ARGV[4]  'c' capture, 'm' capture and then mirror the record below,
--          'a' acknowledge the captured stamp ARGV[5], 'r' forget what the
--          sink acknowledged and capture: every field the shadow holds is
--          pending again (the collection lost history)
-- ARGV[5]  (m) the record's delete stamp; then triples of field name,
--          stamp and value, the value with a leading '1' (a value) or
--          '0' (an unset)
--
-- Stamps are 8 bytes of wall time, 4 of logical counter, a length byte and
-- the replica id (encoding.go). Returns {'skip', type} for a key that is
-- not a hash, else {'ok', pending stamp or '', delete stamp, name_1,
-- stamp_1, value_1 or false, ...} with the fields stamped after the
-- acknowledged stamp when a capture is pending.

local byte, sub, spack, sunpack = string.byte, string.sub, struct.pack, struct.unpack
local ZERO = string.rep('\0', 13)
local TWO32 = 4294967296

local function bcmp(a, b)
  if a == b then return 0 end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
  end
  if #a < #b then return -1 end
  return 1
end

local function scmp(a, b)
  if a == b then return 0 end
  local a1, a2, a3 = sunpack('>I4I4I4', a)
  local b1, b2, b3 = sunpack('>I4I4I4', b)
  if a1 ~= b1 then if a1 < b1 then return -1 end return 1 end
  if a2 ~= b2 then if a2 < b2 then return -1 end return 1 end
  if a3 ~= b3 then if a3 < b3 then return -1 end return 1 end
  return bcmp(sub(a, 14), sub(b, 14))
end

local app, sh = KEYS[1], KEYS[2]
local mode = ARGV[4]

if mode == 'a' then
  local cur = redis.call('HGET', sh, '=a')
  if not cur or scmp(ARGV[5], cur) > 0 then redis.call('HSET', sh, '=a', ARGV[5]) end
  return {'ok'}
end

local t = redis.call('TYPE', app).ok
if t ~= 'hash' and t ~= 'none' then return {'skip', t} end

local shadow = {}
local flat = redis.call('HGETALL', sh)
for i = 1, #flat, 2 do shadow[flat[i]] = flat[i + 1] end
if mode == 'r' and shadow['=a'] then
  redis.call('HDEL', sh, '=a')
  shadow['=a'] = nil
end
if not shadow['=c'] then redis.call('HSET', sh, '=c', ARGV[2]) end

local last = shadow['=l'] or ZERO
local stamp = nil
-- next: one stamp for this capture, above every stamp the shadow holds
-- and not below the floor: the clock's send rule from the later of the
-- two, at the floor's wall time.
local function next()
  if stamp then return stamp end
  local f1, f2, fl = sunpack('>I4I4I4', ARGV[1])
  local w1, w2, l = sunpack('>I4I4I4', last)
  local floor, wall = f1 * TWO32 + f2, w1 * TWO32 + w2
  if floor > wall then
    wall, l = floor, fl
  elseif floor == wall then
    l = math.max(l + 1, fl)
  else
    l = l + 1
  end
  stamp = spack('>I4I4I4', math.floor(wall / TWO32), wall % TWO32, l) .. string.char(#ARGV[3]) .. ARGV[3]
  last = stamp
  return stamp
end

-- Capture: diff the app's hash against the shadow.
local fields = {}
if t == 'hash' then
  local h = redis.call('HGETALL', app)
  for i = 1, #h, 2 do
    local name, v = h[i], h[i + 1]
    fields[name] = true
    if shadow['v' .. name] ~= v then
      local s = next()
      redis.call('HSET', sh, 'v' .. name, v, 's' .. name, s)
      shadow['v' .. name], shadow['s' .. name] = v, s
    end
  end
  for k, _ in pairs(shadow) do
    if byte(k, 1) == 118 then -- 'v'
      local name = sub(k, 2)
      if not fields[name] then
        local s = next()
        redis.call('HDEL', sh, k)
        redis.call('HSET', sh, 's' .. name, s)
        shadow[k], shadow['s' .. name] = nil, s
      end
    end
  end
else
  local live = false
  for k, _ in pairs(shadow) do
    if byte(k, 1) == 118 then live = true break end
  end
  if live then
    local s = next()
    local drop = {}
    for k, _ in pairs(shadow) do
      local c = byte(k, 1)
      if c == 118 or c == 115 then drop[#drop + 1] = k end
    end
    for _, k in ipairs(drop) do shadow[k] = nil end
    -- In commands of at most 1,000 fields: Lua unpacks at most 7,999
    -- values, and an app's hash may have had any number of fields (two
    -- shadow entries each), past the record's limit too.
    for i = 1, #drop, 1000 do
      redis.call('HDEL', sh, unpack(drop, i, math.min(i + 999, #drop)))
    end
    redis.call('HSET', sh, '=d', s)
    shadow['=d'] = s
  end
end
if stamp then
  redis.call('HSET', sh, '=p', stamp, '=l', stamp)
  shadow['=p'] = stamp
end

-- Mirror: write the record's winning fields into the app's hash.
if mode == 'm' then
  local del = ARGV[5]
  local cur = shadow['=d'] or ZERO
  if scmp(del, cur) > 0 then
    redis.call('HSET', sh, '=d', del)
    shadow['=d'] = del
    local gone = {}
    for k, s in pairs(shadow) do
      if byte(k, 1) == 115 and scmp(s, del) <= 0 then gone[#gone + 1] = sub(k, 2) end
    end
    for _, name in ipairs(gone) do
      redis.call('HDEL', app, name)
      redis.call('HDEL', sh, 'v' .. name, 's' .. name)
      shadow['v' .. name], shadow['s' .. name] = nil, nil
    end
  end
  for i = 6, #ARGV, 3 do
    local name, s, v = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local old = shadow['s' .. name]
    if scmp(s, shadow['=d'] or ZERO) > 0 and (not old or scmp(s, old) > 0) then
      if byte(v, 1) == 49 then -- '1': a value
        v = sub(v, 2)
        redis.call('HSET', app, name, v)
        redis.call('HSET', sh, 'v' .. name, v, 's' .. name, s)
        shadow['v' .. name] = v
      else
        redis.call('HDEL', app, name)
        redis.call('HDEL', sh, 'v' .. name)
        redis.call('HSET', sh, 's' .. name, s)
        shadow['v' .. name] = nil
      end
      shadow['s' .. name] = s
      if scmp(s, last) > 0 then
        last = s
        redis.call('HSET', sh, '=l', s)
      end
    end
  end
end

-- What is pending: everything stamped after the acknowledged stamp.
local pend = shadow['=p']
local ack = shadow['=a'] or ZERO
if not pend or scmp(pend, ack) <= 0 then return {'ok', ''} end
local out = {'ok', pend, shadow['=d'] or ZERO}
for k, s in pairs(shadow) do
  if byte(k, 1) == 115 and scmp(s, ack) > 0 then
    local name = sub(k, 2)
    out[#out + 1] = name
    out[#out + 1] = s
    out[#out + 1] = shadow['v' .. name] or false
  end
end
return out
