-- Doorman: measure the depth of a bounded slice of queues and peek at the oldest due message
-- of every non-empty priority list, inside Redis.
--
-- Privacy: a message never leaves Redis. Its envelope is decoded here and only the
-- allow-listed header fields below are returned; the body (args, kwargs), argsrepr,
-- kwargsrepr and origin are never copied into the reply.
--
-- Bounded work: the caller passes at most a few hundred queues per call, and the script
-- stops early (returning where to resume) once it has decoded ``budget`` bytes of messages,
-- so no single call holds Redis for long whatever the queues hold. Every command goes
-- through redis.pcall: a command that the ACL denies is named in the reply, not fatal.
--
-- ARGV[1] key prefix (kombu's global_keyprefix), ARGV[2] largest message (bytes) decoded,
-- ARGV[3] bytes decoded per call before stopping, ARGV[4] now (epoch seconds),
-- ARGV[5] how many messages to look at from the old end of a list for one that is due,
-- ARGV[6] priority separator, ARGV[7] priority steps beyond 0 (comma separated),
-- ARGV[8] first queue (1-based, among ARGV[9..]) to measure, ARGV[9..] queue names.
local prefix = ARGV[1]
local peek_max = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local sep = ARGV[6]
local first = tonumber(ARGV[8])
local FIRST_NAME = 9

local levels = {0}
for step in string.gmatch(ARGV[7], '[^,]+') do levels[#levels + 1] = tonumber(step) end

local denied = {}
local used = 0

-- A reply from redis.pcall: the value, or nil and the error text.
local function call(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply['err'] then
    local err = reply['err']
    -- Inside a script an ACL denial reads "The user executing the script can't run this
    -- command" (or "can't access" a key); outside, "NOPERM ...".
    local lower = string.lower(err)
    if string.find(lower, "can't run", 1, true) or string.find(lower, "can't access", 1, true)
        or string.find(err, 'NOPERM', 1, true) or string.find(lower, 'no permissions', 1, true) then
      denied[string.upper((...))] = true
    end
    return nil, err
  end
  return reply, nil
end

-- cjson cannot encode inf or NaN (a message holding 1e999 would fail the whole reply):
-- only finite numbers are passed on.
local function finite(v)
  if type(v) == 'number' and v == v and v ~= math.huge and v ~= -math.huge then return v end
  return nil
end

local function number_or_nil(v)
  if type(v) == 'string' then return finite(tonumber(v)) end
  return finite(v)
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Epoch seconds of an ISO 8601 time as Celery writes ``eta`` (naive means UTC), or nil.
local function epoch(text)
  local y, mo, d, h, mi, s = string.match(
    text, '^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)')
  if not y then return nil end
  local t = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
  local rest = string.sub(text, 20)
  local frac = string.match(rest, '^%.(%d+)')
  if frac then t = t + tonumber('0.' .. frac) end
  local sign, oh, om = string.match(rest, '([%+%-])(%d%d):?(%d%d)$')
  if sign then
    local offset = tonumber(oh) * 3600 + tonumber(om) * 60
    if sign == '+' then t = t - offset else t = t + offset end
  end
  return t
end

-- The allow-listed fields of one message; ``due`` is false for an ETA not reached yet.
local function inspect(raw, level)
  local size = string.len(raw)
  local r = {l = level, s = size, k = false}
  local digest = redis.sha1hex(string.sub(raw, 1, 512)) .. ':' .. size
  if size > peek_max then
    r.f = digest
    r.x = 'oversized'
    return r, true
  end
  used = used + size
  local ok, msg = pcall(cjson.decode, raw)
  local due = true
  if ok and type(msg) == 'table' and type(msg['headers']) == 'table' then
    local h = msg['headers']
    local p = msg['properties']
    if type(p) ~= 'table' then p = {} end
    r.k = true
    if type(h['id']) == 'string' then r.id = h['id'] end
    if type(h['task']) == 'string' then r.t = h['task'] end
    if type(h['eta']) == 'string' then
      r.eta = h['eta']
      local at = epoch(h['eta'])
      if at and at > now then due = false end
    end
    if type(h['expires']) == 'string' then r.exp = h['expires'] end
    r.xms = number_or_nil(p['expiration'])
    r.pub = number_or_nil(h['x_published_at'])
    r.re = finite(h['retries'])
    local di = p['delivery_info']
    if h['redelivered'] == true or (type(di) == 'table' and di['redelivered'] == true) then
      r.rd = true
    end
    r.pr = finite(p['priority'])
    if type(msg['content-type']) == 'string' then r.ct = string.sub(msg['content-type'], 1, 64) end
  end
  r.f = r.id or digest
  return r, due
end

-- The oldest due message of one list: ETA tasks not due yet at the old end are passed
-- over, up to ``window`` messages. ``sk`` counts those passed over; ``wx`` says the window
-- ended before a due message (or the list's end) was found, so the latency of what waits
-- behind is not measured.
local function peek(key, level, length)
  local oldest = nil
  local looked = 0
  for i = 1, math.min(window, length) do
    local raw = call('LINDEX', key, -i)
    if type(raw) ~= 'string' then break end
    local r, due = inspect(raw, level)
    if due then
      if i > 1 then r.sk = i - 1 end
      return r
    end
    oldest = oldest or r
    looked = i
    if used >= budget then break end
  end
  if oldest then
    oldest.sk = looked
    if length > looked then oldest.wx = true end
  end
  return oldest
end

local out = {}
local resume = nil
local last = #ARGV - FIRST_NAME + 1
for index = first, last do
  if used >= budget and index > first then
    resume = index
    break
  end
  local name = ARGV[FIRST_NAME + index - 1]
  local base = prefix .. name
  local entry = {n = name, d = 0, p = {}, o = {}}
  for _, level in ipairs(levels) do
    local key = base
    if level > 0 then key = base .. sep .. level end
    local len, err = call('LLEN', key)
    if err then
      if level == 0 and string.find(err, 'WRONGTYPE', 1, true) then
        local kind = call('TYPE', key)
        local t = type(kind) == 'table' and kind['ok'] or 'unknown'
        entry.e = 'wrong_type:' .. t
      end
    elseif len > 0 then
      entry.d = entry.d + len
      entry.p[tostring(level)] = len
      entry.o[#entry.o + 1] = peek(key, level, len)
    end
  end
  out[#out + 1] = entry
end

local denied_list = {}
for command in pairs(denied) do denied_list[#denied_list + 1] = command end
return cjson.encode({q = out, r = resume, den = denied_list})
